"""Model and run set-up shared by both LLM trainers (AIHFTrainer and AIHFRLTrainer).

PEFT detection, freezing and dropout, the stop tokens of generation, stable per-purpose seeds, and the
one-line refusal of a checkpoint file that would need unpickling.
"""

from __future__ import annotations

import copy
import pickle
import zlib
from typing import Any

from torch import nn

from ..data import end_token
from ..errors import ConfigError

# Checkpoints are written here under output_dir and renamed into place, so a crash never leaves half a checkpoint.
STAGING_DIR = ".aihf-staging"


def with_pad_token(tokenizer: Any) -> Any:
    """``tokenizer``, or a copy of it whose pad token is its EOS when it has none: the caller's object is
    never changed."""
    if tokenizer.pad_token_id is not None:
        return tokenizer
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def is_peft(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # peft is a dependency, but keep the trainer usable without it
        return False
    return isinstance(model, PeftModel)


def disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def frozen(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def stop_tokens(tokenizer: Any, model: nn.Module, eos_token: str | None = None) -> list[int]:
    """The data's end token, the tokenizer's EOS and any end-of-turn ids the model's generation config lists."""
    ids = [i for i in (end_token(tokenizer, eos_token).id, tokenizer.eos_token_id) if i is not None]
    ids = list(dict.fromkeys(ids))
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for i in config_eos if isinstance(config_eos, list) else [config_eos]:
        if i is not None and i not in ids:
            ids.append(i)
    return ids


def stable_seed(*parts: int) -> int:
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


class refusing_pickles:
    """Turns torch.load(weights_only=True)'s refusal of a file that would run code on loading
    into a one-line :class:`aihf.ConfigError` naming the checkpoint."""

    def __init__(self, checkpoint: str | None, what: str):
        self.checkpoint, self.what = checkpoint, what

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if kind is not None and issubclass(kind, pickle.UnpicklingError):
            first = str(error).strip().splitlines()[0] if str(error).strip() else kind.__name__
            raise ConfigError(
                f"resume_from_checkpoint: {self.checkpoint}: the {self.what} is not a plain tensor file and was not "
                f"unpickled ({first})"
            ) from error
        return False
