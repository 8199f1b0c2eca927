"""The explicit reward model of AIHF-RL: a sequence classifier with one output, ``r(x, y)``.

``r(x, y)`` is read from the score head of a sequence classifier
(``AutoModelForSequenceClassification`` with ``num_labels=1``) in one of two ways (``readout``):
``"last"``, the head at the last non-pad token of ``prompt + completion`` (pooled by the model's
``pad_token_id``, as TRL's ``RewardTrainer`` scores), or ``"mean"``, the mean of the head's
per-token scores over the completion's tokens (as the AIHF paper's authors' code scores). A saved
reward model records its read-out in its config (``aihf_reward_readout``) and in its README. Every
completion it scores is first framed alike (:func:`frame_for_reward`): whether an answer was cut by
``max_new_tokens`` or ``max_length`` never reaches the reward model. It starts from the policy's base model
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
from ..errors import ConfigError

REWARD_READOUTS = ("last", "mean")
READOUT_CONFIG_KEY = "aihf_reward_readout"  # in a saved reward model's config.json


def _set_pad(model: PreTrainedModel, pad_token_id: int) -> None:
    model.config.pad_token_id = pad_token_id
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if text_config is not model.config:
        text_config.pad_token_id = pad_token_id


def reward_model_from_policy(policy: PreTrainedModel, pad_token_id: int) -> PreTrainedModel:
    """A reward model with the policy's transformer weights (copied) and a new score head.

    Raises ``ValueError`` when the architecture has no sequence-classification class or when
    weights other than the score head would be left uninitialised. A PEFT policy (a LoRA SFT model)
    gives its merged weights, base plus adapter: the policy as it samples.
    """
    if hasattr(policy, "merge_and_unload"):
        policy = copy.deepcopy(policy).merge_and_unload()
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
        if _is_classifier(model):
            _set_pad(model, pad_token_id)
            return model
        return reward_model_from_policy(model, pad_token_id)
    if _local_path(model) and not os.path.isdir(os.path.expanduser(model)):
        what = "a file, not a model folder" if os.path.exists(os.path.expanduser(model)) else "no such folder"
        raise ConfigError(f"reward_model '{model}': {what}")
    loaded = AutoModelForSequenceClassification.from_pretrained(
        model, num_labels=1, dtype=dtype, trust_remote_code=trust_remote_code
    )
    _set_pad(loaded, pad_token_id)
    return loaded


def _local_path(name: str) -> bool:
    """Whether ``name`` can only mean a local path: a Hub id is ``name`` or ``org/name``."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


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


def score_head(model: nn.Module) -> nn.Module | None:
    """The module that maps each position's hidden state to its score: the ``score`` head of a HF
    sequence classifier (under PEFT, the wrapper that runs the trained copy), or ``None``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = getattr(base, "score", None)
    return head if isinstance(head, nn.Module) else None


def model_readout(model: nn.Module) -> str:
    """The read-out a reward model was trained with (its config's ``aihf_reward_readout``), else ``"last"``."""
    readout = getattr(getattr(model, "config", None), READOUT_CONFIG_KEY, None)
    return readout if readout in REWARD_READOUTS else "last"


def default_readout(given: Any) -> str:
    """The read-out for a reward model when none is set: ``"mean"`` for a new one (``given`` is
    ``None`` or a causal LM whose head is replaced), the one recorded in a saved aihf reward model's
    config, and ``"last"`` for any other sequence classifier (TRL's and HF's reward models)."""
    if given is None:
        return "mean"
    if isinstance(given, str):
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(given)
        except (OSError, ValueError):
            return "last"
        archs = getattr(config, "architectures", None) or []
        if not any(a.endswith("ForSequenceClassification") for a in archs):
            return "mean"  # a causal LM: a new score head
        return model_readout(type("Given", (), {"config": config})())
    if _is_classifier(given):
        return model_readout(given)
    return "mean"


def _is_classifier(model: Any) -> bool:
    """A sequence classifier with one output (any head: ``score``, BERT's ``classifier``, ...)."""
    if getattr(getattr(model, "config", None), "num_labels", None) != 1:
        return False
    return hasattr(model, "score") or type(model).__name__.endswith("ForSequenceClassification")


def check_readout(model: nn.Module, readout: str) -> None:
    """Raise ``ValueError`` unless ``model`` can be scored with ``readout``."""
    if readout not in REWARD_READOUTS:
        raise ValueError(f"reward readout must be one of {REWARD_READOUTS}, got '{readout}'")
    if readout == "mean" and score_head(model) is None:
        raise ValueError(
            f"reward readout 'mean' needs per-token scores, but {type(model).__name__} has no `score` head "
            "(transformers' decoder classifiers, e.g. LlamaForSequenceClassification, have one): use readout 'last'"
        )


def completion_mean(per_token: Tensor, completion_mask: Tensor) -> Tensor:
    """Mean of ``per_token`` ``(B, T)`` over the positions where ``completion_mask`` ``(B, T)`` is 1: ``(B,)``."""
    mask = completion_mask.to(per_token.dtype)
    return (per_token * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def reward_scores(
    model: nn.Module,
    prompts: list[list[int]],
    completions: list[list[int]],
    pad_token_id: int,
    *,
    end_token_id: int | Sequence[int] | None = None,
    readout: str | None = None,
) -> Tensor:
    """``r(x, y)`` for each (prompt ids, completion ids) row: shape ``(B,)``, float32.

    With ``end_token_id`` (the end token, or the policy's stop tokens, first one appended) the
    completions are framed by :func:`frame_for_reward` first; every caller in aihf passes it.
    ``None`` scores the ids as given. Rows are right-padded. ``readout="last"`` reads the score at
    the last non-pad token of each row; ``"mean"`` averages the score head's per-token outputs
    ``(B, T, 1)`` over the completion's tokens (the appended end token included; a forward hook on
    the head catches them, so it works through PEFT wrappers). ``None``: the read-out recorded in the
    model's config (:func:`model_readout`). Raises ``ValueError`` for an unknown read-out, or
    ``"mean"`` on a model without a ``score`` head.
    """
    if end_token_id is not None:
        completions = frame_for_reward(completions, end_token_id)
    readout = model_readout(model) if readout is None else readout
    check_readout(model, readout)
    device = next(model.parameters()).device
    batch = pad_sequences(prompts, completions, pad_token_id)
    caught: list[Tensor] = []
    hook = None
    if readout == "mean":
        hook = score_head(model).register_forward_hook(lambda _m, _i, out: caught.append(out))
    try:
        out = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device), use_cache=False
        )
    finally:
        if hook is not None:
            hook.remove()
    if readout == "last":
        return out.logits[:, 0].float()
    per_token = caught[-1] if caught else None
    if per_token is None or per_token.dim() != 3 or per_token.shape[:2] != batch["input_ids"].shape:
        shape = None if per_token is None else tuple(per_token.shape)
        raise ValueError(f"reward readout 'mean': the score head gave {shape}, not one score per token")
    return completion_mean(per_token[..., 0].float(), batch["completion_mask"].to(per_token.device))


def save_reward_model(model: nn.Module, output_dir: str, tokenizer: Any = None, *, readout: str | None = None) -> None:
    """Save a standalone reward model (LoRA adapters merged into a copy) that
    :func:`load_reward_model` and ``AutoModelForSequenceClassification`` can load, with its
    read-out (default: :func:`model_readout`) in its config and a README saying how to score."""
    from .model_setup import is_peft

    readout = model_readout(model) if readout is None else readout
    if is_peft(model):
        model = copy.deepcopy(model).merge_and_unload()
    setattr(model.config, READOUT_CONFIG_KEY, readout)
    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    with open(os.path.join(output_dir, "README.md"), "w") as f:
        f.write(_scoring_card(readout))


def _scoring_card(readout: str) -> str:
    how = {
        "last": "the score head's output at the last non-pad token of `prompt + completion` (what "
        "`AutoModelForSequenceClassification` returns as `logits[:, 0]`, given the saved `pad_token_id`).",
        "mean": "the **mean of the score head's per-token outputs over the completion's tokens**, not the "
        "`logits` that `AutoModelForSequenceClassification` returns (those are read at the last token only). "
        "Take the head's output at every position (e.g. a forward hook on `model.score`) and average it over "
        "the positions of the completion.",
    }[readout]
    return "\n".join(
        [
            "# Reward model (aihf)",
            "",
            f"A sequence classifier with one output, trained by aihf. Read-out: `{readout}` "
            f"(`{READOUT_CONFIG_KEY}` in config.json). The reward `r(x, y)` of a prompt `x` and completion `y` "
            f"is {how} Every completion is framed alike before scoring: trailing end tokens removed and "
            "exactly one end token appended (`frame_for_reward`), so that whether an answer was cut off "
            "never changes its score.",
            "",
            "```python",
            "from aihf.llm.reward_model import load_reward_model, reward_scores",
            "",
            'model = load_reward_model("<this folder>", pad_token_id)',
            "# the saved read-out; end_token_id: the end token, or the policy's stop tokens (the first is appended)",
            "scores = reward_scores(model, prompt_ids, completion_ids, pad_token_id, end_token_id=eos_token_id)",
            "```",
            "",
            "`aihf eval-reward --reward_model <this folder> --preferences pairs.jsonl` scores with it too.",
            "",
        ]
    )


@torch.no_grad()
def evaluate_reward_model(
    model: nn.Module,
    preferences: Any,
    pad_token_id: int,
    batch_size: int = 16,
    readout: str | None = None,
    *,
    end_token_id: int | Sequence[int] | None = None,
) -> dict[str, float]:
    """Pairwise accuracy (share of pairs with ``r(y+) > r(y-)``) and mean margin ``r(y+) - r(y-)``
    of ``model`` on a prepared preference dataset (:func:`aihf.data.prepare_preferences`), scored
    with ``readout`` (default: the model's own, :func:`model_readout`); ``end_token_id`` frames the
    answers as in training (:func:`reward_scores`)."""
    was_training = model.training
    model.eval()
    margins = []
    for start in range(0, len(preferences), batch_size):
        rows = preferences[start : start + batch_size]
        prompts = list(rows["prompt_ids"])
        answers = list(rows["chosen_ids"]) + list(rows["rejected_ids"])
        scores = reward_scores(
            model, prompts * 2, answers, pad_token_id, readout=readout, end_token_id=end_token_id
        )
        chosen, rejected = scores.chunk(2)
        margins.append(chosen - rejected)
    model.train(was_training)
    margin = torch.cat(margins)
    return {"accuracy": (margin > 0).float().mean().item(), "margin": margin.mean().item(), "num_pairs": len(margin)}
