"""What :class:`aihf.llm.AIHFTrainer` does with the arguments of TRL's ``DPOTrainer`` that it does not
read like ``transformers.Trainer``: TRL's names mapped to aihf's, a dict of evaluation sets, TR-DPO's
reference updates, and a one-line :class:`aihf.ConfigError` for what aihf does another way."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import datasets
import torch
from torch import nn
from transformers import TrainerCallback

from ..errors import ConfigError

EVAL_TERMS = {"preferences": "preference (DPO) term", "demonstrations": "demonstration term"}


def trl_alias(trl_value: Any, trl_name: str, value: Any, name: str) -> Any:
    """``trl_value`` (TRL's argument) as ``name``; both given is a :class:`aihf.ConfigError`."""
    if trl_value is None:
        return value
    if value is not None:
        raise ConfigError(f"AIHFTrainer: give {trl_name} or {name}, not both ({trl_name} is read as {name})")
    return trl_value


def refuse_trainer_arguments(data_collator: Any, compute_metrics: Any) -> None:
    """TRL's ``DPOTrainer`` arguments that AIHFTrainer cannot honour, refused in one line each."""
    if data_collator is not None:
        raise ConfigError(
            "data_collator: AIHFTrainer batches pairs and demonstrations itself (rows chosen | rejected | "
            "demonstrations, aihf.data.AIHFCollator); set max_length, truncation_mode or pad_to_multiple_of instead"
        )
    if compute_metrics is not None:
        raise ConfigError(
            "compute_metrics: AIHFTrainer's evaluation returns no predictions to compute metrics on; it logs "
            "eval_loss, eval_rewards/*, eval_demo/*, eval_entropy and eval_mean_token_accuracy over the whole eval set"
        )


def model_init_kwargs_for(
    args: Any, model: Any, model_init_kwargs: dict | None, quantization_config: Any
) -> dict | None:
    """The loading keyword arguments of a model given by path: ``args.model_init_kwargs`` (TRL's config
    field) updated with the trainer's ``model_init_kwargs`` and ``quantization_config``. Refuses them
    for a model object, which is already loaded."""
    merged = {**(args.model_init_kwargs or {}), **(model_init_kwargs or {})}
    if quantization_config is not None:
        merged["quantization_config"] = quantization_config
    if merged and not isinstance(model, str):
        given = "quantization_config" if quantization_config is not None else "model_init_kwargs"
        raise ConfigError(
            f"{given} is only used when model is a path or hub id, not a model object (on the command line the "
            "model options say how it loads: --dtype, --gguf_file, --attn_implementation, --trust_remote_code)"
        )
    return merged or None


def named_eval_sources(preferences: Any, demonstrations: Any) -> dict[str | None, tuple[Any, Any]]:
    """Evaluation sources by name: ``{None: (preferences, demonstrations)}``, or for a dict (or
    ``DatasetDict``) of evaluation sets, as TRL takes ``eval_dataset``, one entry per name, evaluated
    with the prefix ``eval_<name>_``. Dicts on both sides pair up by name; a dict beside a single
    source is refused."""
    is_dict = [isinstance(s, (dict, datasets.DatasetDict)) for s in (preferences, demonstrations)]
    if not any(is_dict):
        return {None: (preferences, demonstrations)} if preferences is not None or demonstrations is not None else {}
    if not all(is_dict) and preferences is not None and demonstrations is not None:
        raise ConfigError(
            "eval_preferences and eval_demonstrations: give both as dicts of named evaluation sets, or neither"
        )
    prefs, demos = preferences or {}, demonstrations or {}
    names = list(dict.fromkeys([*prefs, *demos]))
    return {str(name): (prefs.get(name), demos.get(name)) for name in names}


def check_eval_terms(args: Any, trained: set[str], evaluated: set[str], name: str | None) -> None:
    """``eval_loss`` is the training objective over the terms an evaluation set has (docs/runs-and-outputs.md,
    "eval_loss"). When the set lacks a term the training loss has, say so in one line, and refuse
    ``metric_for_best_model`` on that set's loss: a checkpoint would be selected on another objective.

    ``trained``/``evaluated``: the sources (``"preferences"``, ``"demonstrations"``) with a training
    term / in this evaluation set."""
    missing = sorted(trained - evaluated)
    if not missing:
        return
    kept = " and ".join(EVAL_TERMS[n] for n in sorted(evaluated & trained)) or "no term of the training loss"
    loss_name = "eval_loss" if name is None else f"eval_{name}_loss"
    lacking = (
        f"{loss_name} is the {kept} alone (no eval_{missing[0]} given), while the training loss also has the "
        f"{EVAL_TERMS[missing[0]]}"
    )
    metric = args.metric_for_best_model
    if metric is not None and (metric if metric.startswith("eval_") else f"eval_{metric}") == loss_name:
        split = "loss/pref" if "preferences" in evaluated else "loss/demo"
        raise ConfigError(
            f"metric_for_best_model={metric!r}: {lacking}; pass eval_{missing[0]}=, or select on "
            f"'{loss_name.replace('loss', split, 1)}' to say that only that term counts"
        )
    if args.process_index == 0:
        logging.getLogger("aihf").info(f"{lacking}: pass eval_{missing[0]}= to evaluate the same objective")


class SyncRefModelCallback(TrainerCallback):
    """TR-DPO (Gorbatovski et al., "Learn Your Reference Model for Real Good Alignment", 2024), TRL's
    ``sync_ref_model``: every ``ref_model_sync_steps`` optimizer steps,
    ``ref <- alpha * policy + (1 - alpha) * ref`` with ``alpha = ref_model_mixup_alpha``."""

    def __init__(self, policy: Callable[[], nn.Module], reference: nn.Module, alpha: float, every: int):
        policy_names = {name for name, _ in policy().named_parameters()}
        if policy_names != {name for name, _ in reference.named_parameters()}:
            raise ConfigError("sync_ref_model=True: the reference model's parameters must be named as the policy's")
        self.policy, self.reference, self.alpha, self.every = policy, reference, alpha, every

    @torch.no_grad()
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every:
            return
        policy = dict(self.policy().named_parameters())
        for name, ref in self.reference.named_parameters():
            ref.mul_(1 - self.alpha).add_(policy[name].detach().to(ref.dtype), alpha=self.alpha)
