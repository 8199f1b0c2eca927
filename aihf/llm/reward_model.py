"""The explicit reward model of AIHF-RL: a sequence classifier with one output, ``r(x, y)``.

``r(x, y)`` is the score head applied at the last non-pad token of ``prompt + completion``
(``AutoModelForSequenceClassification`` with ``num_labels=1``, pooled by the model's
``pad_token_id``, as TRL's ``RewardTrainer`` scores). Every completion it scores is first framed
alike (:func:`frame_for_reward`): whether an answer was cut by ``max_new_tokens`` or
``max_length`` never reaches the reward model. It starts from the policy's base model
(the language-model head is replaced by a freshly initialised score head) or from a given
checkpoint, may train LoRA adapters only, and may freeze its lower layers.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from ..data import pad_sequences


def _set_pad(model: PreTrainedModel, pad_token_id: int) -> None:
    model.config.pad_token_id = pad_token_id
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if text_config is not model.config:
        text_config.pad_token_id = pad_token_id


def reward_model_from_policy(policy: PreTrainedModel, pad_token_id: int) -> PreTrainedModel:
    """A reward model with the policy's transformer weights (copied) and a new score head.

    Raises ``ValueError`` when the architecture has no sequence-classification class or when
    weights other than the score head would be left uninitialised.
    """
    config = copy.deepcopy(policy.config)
    config.num_labels = 1
    dtype = next(policy.parameters()).dtype
    model = AutoModelForSequenceClassification.from_config(config, dtype=dtype)
    missing, _unexpected = model.load_state_dict(policy.state_dict(), strict=False)
    not_head = [k for k in missing if not k.startswith("score.")]
    if not_head:
        raise ValueError(f"policy weights do not fit a {type(model).__name__}: missing {not_head[:3]}")
    _set_pad(model, pad_token_id)
    return model


def load_reward_model(
    model: str | PreTrainedModel,
    pad_token_id: int,
    *,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """A reward model from a folder / hub id (a saved reward model, or a causal LM whose head is
    replaced by a new score head), or from a causal LM object (:func:`reward_model_from_policy`)."""
    if not isinstance(model, str):
        if getattr(model.config, "num_labels", None) == 1 and hasattr(model, "score"):
            _set_pad(model, pad_token_id)
            return model
        return reward_model_from_policy(model, pad_token_id)
    loaded = AutoModelForSequenceClassification.from_pretrained(
        model, num_labels=1, dtype=dtype, trust_remote_code=trust_remote_code
    )
    _set_pad(loaded, pad_token_id)
    return loaded


def _layer_list(model: nn.Module) -> nn.ModuleList | None:
    """The transformer's block list (``model.layers``, ``transformer.h``, ...): the longest ModuleList."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    return max(lists, key=len) if lists else None


def freeze_lower_layers(model: PreTrainedModel, num_layers: int) -> None:
    """Freeze the input embeddings and the first ``num_layers`` transformer blocks.

    Reward models are often trained with the lower layers frozen: fewer parameters to fit on
    small preference sets, and the optimizer state shrinks. Raises ``ValueError`` when
    ``num_layers`` exceeds the model's depth.
    """
    if num_layers <= 0:
        return
    layers = _layer_list(model)
    if layers is None or num_layers > len(layers):
        depth = 0 if layers is None else len(layers)
        raise ValueError(f"reward_freeze_layers={num_layers} but the reward model has {depth} layers")
    model.get_input_embeddings().requires_grad_(False)
    for block in layers[:num_layers]:
        block.requires_grad_(False)


def frame_for_reward(completions: list[list[int]], end_token_id: int | Sequence[int]) -> list[list[int]]:
    """Each completion with its trailing end tokens removed and exactly one end token appended.

    ``end_token_id``: the end token, or the stop tokens (any of them is removed; the first is
    appended). Demonstrations end with an end token and samples cut by ``max_new_tokens`` do not:
    scored as they are, a reward model separates the two by that token alone (it reads its score
    right at it). Framed, a truncated sample and a finished answer with the same content are the
    same sequence, and get the same score; whether an answer finished is then the policy step's
    explicit choice (``missing_eos_penalty``). A framed row may be one token over ``max_length``.
    Where the pad id is the end token's, the score is read just before the appended token: the
    same for both, still.
    """
    stops = [end_token_id] if isinstance(end_token_id, int) else list(end_token_id)
    if not stops:
        raise ValueError("end_token_id: no end token given")
    framed = []
    for ids in completions:
        ids = list(ids)
        while ids and ids[-1] in stops:
            ids.pop()
        framed.append(ids + stops[:1])
    return framed


def reward_scores(
    model: nn.Module,
    prompts: list[list[int]],
    completions: list[list[int]],
    pad_token_id: int,
    *,
    end_token_id: int | Sequence[int] | None = None,
) -> Tensor:
    """``r(x, y)`` for each (prompt ids, completion ids) row: shape ``(B,)``, float32.

    With ``end_token_id`` (the end token, or the policy's stop tokens, first one appended) the
    completions are framed by :func:`frame_for_reward` first; every caller in aihf passes it.
    ``None`` scores the ids as given. Rows are right-padded; the score is read at the last non-pad
    token of each row.
    """
    if end_token_id is not None:
        completions = frame_for_reward(completions, end_token_id)
    device = next(model.parameters()).device
    batch = pad_sequences(prompts, completions, pad_token_id)
    out = model(
        input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device), use_cache=False
    )
    return out.logits[:, 0].float()


def save_reward_model(model: nn.Module, output_dir: str, tokenizer: Any = None) -> None:
    """Save a standalone reward model (LoRA adapters merged into a copy) that
    :func:`load_reward_model` and ``AutoModelForSequenceClassification`` can load."""
    from .trainer import _is_peft

    if _is_peft(model):
        model = copy.deepcopy(model).merge_and_unload()
    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)


@torch.no_grad()
def evaluate_reward_model(
    model: nn.Module,
    preferences: Any,
    pad_token_id: int,
    batch_size: int = 16,
    *,
    end_token_id: int | Sequence[int] | None = None,
) -> dict[str, float]:
    """Pairwise accuracy (share of pairs with ``r(y+) > r(y-)``) and mean margin ``r(y+) - r(y-)``
    of ``model`` on a prepared preference dataset (:func:`aihf.data.prepare_preferences`).
    ``end_token_id`` frames the answers as in training (:func:`reward_scores`)."""
    was_training = model.training
    model.eval()
    margins = []
    for start in range(0, len(preferences), batch_size):
        rows = preferences[start : start + batch_size]
        prompts = list(rows["prompt_ids"])
        answers = list(rows["chosen_ids"]) + list(rows["rejected_ids"])
        scores = reward_scores(model, prompts * 2, answers, pad_token_id, end_token_id=end_token_id)
        chosen, rejected = scores.chunk(2)
        margins.append(chosen - rejected)
    model.train(was_training)
    margin = torch.cat(margins)
    return {"accuracy": (margin > 0).float().mean().item(), "margin": margin.mean().item(), "num_pairs": len(margin)}
