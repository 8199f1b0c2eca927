"""Configuration of :class:`aihf.llm.AIHFTrainer`: the shared :class:`AIHFBaseConfig` plus the implicit-reward fields.

Field help strings double as ``aihf train --help``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import torch

from ..data.tokenize import check_lengths
from ..errors import ConfigError
from ..losses import PREFERENCE_LOSS_TYPES, PREFERENCE_LOSSES, label_smoothing_error
from .base_config import AIHFBaseConfig, check_common_settings

DEMO_LOSSES = ("nll", "self_play")
TRUNCATION_MODES = ("keep_start", "keep_end")


@dataclass
class AIHFConfig(AIHFBaseConfig):
    """Training arguments for AIHF with an implicit reward ``r = beta * log(pi / pi_ref)``.

    The loss is ``pref_weight * DPO(preferences) + demo_weight * D(demonstrations)`` where ``D``
    is the demonstration NLL (``demo_loss="nll"``, offline AIHF-DPO) or the self-play term
    against the policy frozen at the start of each round (``demo_loss="self_play"``).
    ``demo_weight=0`` is DPO, ``pref_weight=0`` is SFT (nll) or SPIN (self_play).

    The fields shared with :class:`aihf.llm.AIHFRLConfig` (objective weights, lengths, sampling)
    live in :class:`aihf.llm.base_config.AIHFBaseConfig`. Defaults that differ from
    ``TrainingArguments``: ``learning_rate=1e-6``, ``logging_steps=10``, ``remove_unused_columns=False``.
    """

    # The objective (beta, demo_weight, pref_weight: AIHFBaseConfig).
    demo_loss: str = field(
        default="nll",
        metadata={
            "help": "Demonstration term: 'nll' (offline AIHF-DPO; SFT when pref_weight=0) or 'self_play' "
            "(online self-play AIHF; SPIN when pref_weight=0).",
            "choices": list(DEMO_LOSSES),
        },
    )
    loss_type: str = field(
        default="sigmoid",
        metadata={
            "help": "Preference loss, TRL's names: "
            + ", ".join(f"'{name}' ({spec.description})" for name, spec in PREFERENCE_LOSSES.items())
            + ".",
            "choices": list(PREFERENCE_LOSS_TYPES),
        },
    )
    loss_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "Weights of the loss types when loss_type lists several (--loss_type sigmoid hinge "
            "--loss_weights 1 0.5; Python/YAML: lists), TRL's mix: the preference term is sum_k weight_k * loss_k "
            "per pair. Default 1 each."
        },
    )
    use_weighting: bool = field(
        default=False,
        metadata={
            "help": "WPO weighting (TRL's use_weighting): each pair's preference loss is multiplied by the policy's "
            "length-normalised probability of both answers (aligned by sum_v p_v^2; no gradient through it)."
        },
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "Probability that a preference label is flipped, for 'sigmoid' (conservative DPO, in [0, 0.5]) "
            "and 'robust' (robust DPO, in [0, 0.5)). Note: TRL 1.x's 'sigmoid' ignores it."
        },
    )
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata={
            "help": "Score every preference pair with the reference model once before training, then free the "
            "reference (saves its memory and forward passes during training)."
        },
    )
    precompute_ref_batch_size: int | None = field(
        default=None,
        metadata={"help": "Pairs per reference forward pass when precomputing (default: per_device_eval_batch_size)."},
    )
    sync_ref_model: bool = field(
        default=False,
        metadata={
            "help": "TR-DPO (TRL's sync_ref_model): every ref_model_sync_steps optimizer steps the reference becomes "
            "ref_model_mixup_alpha * policy + (1 - ref_model_mixup_alpha) * reference. Needs a reference model of its "
            "own: not with a PEFT policy without ref_model, nor with precompute_ref_log_probs."
        },
    )
    ref_model_mixup_alpha: float = field(
        default=0.6, metadata={"help": "TR-DPO: the policy's share alpha in [0, 1] of each reference update."}
    )
    ref_model_sync_steps: int = field(
        default=512, metadata={"help": "TR-DPO: optimizer steps between two reference updates."}
    )
    model_init_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for loading the model when it is given by path or hub id (TRL's name), e.g. "
            "'{\"dtype\": \"bfloat16\"}'; the same as AIHFTrainer(model_init_kwargs=...), which wins if both are given."
        },
    )

    # Data (lengths, eos_token, padding_free: AIHFBaseConfig).
    prefix_sharing: bool = field(
        default=False,
        metadata={
            "help": "Run each preference pair's prompt once for both answers: one packed sequence prompt + chosen + "
            "rejected, the rejected answer masked from the chosen one (a 4D attention mask). Implies packing. Same "
            "losses up to float rounding; checked at start-up to work with the model."
        },
    )
    truncation_mode: str | None = field(
        default=None,
        metadata={
            "help": "TRL's truncation of prompt + completion to max_length: 'keep_start' (the completion loses its "
            "end, the prompt is cut only by an explicit max_prompt_length) or 'keep_end' (the prompt loses its start, "
            "BOS kept, so that the longest answer fits). Default: aihf's rule, prompts cut on the left to "
            "max_prompt_length (half of max_length), completions on the right.",
            "choices": list(TRUNCATION_MODES),
        },
    )
    dataset_num_proc: int | None = field(
        default=None,
        metadata={
            "help": "Accepted for TRL scripts as 1 (or unset): aihf reads, validates and tokenises each source in one "
            "pass in the main process, so that an error names its row."
        },
    )
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "Pad batches to a multiple of this length (helps GPU kernels)."}
    )

    # Self-play (sampling settings: AIHFBaseConfig).
    self_play_round_steps: int | None = field(
        default=None,
        metadata={"help": "Self-play round length in optimizer steps (overrides self_play_round_epochs)."},
    )
    self_play_round_epochs: float = field(
        default=1.0,
        metadata={"help": "Self-play round length in epochs, rounded up to whole optimizer steps."},
    )
    self_play_regen_prob: float = field(
        default=0.0,
        metadata={
            "help": "Probability that a batch's self-play samples are drawn again from the round's opponent even "
            "though this round already sampled them (matters when a round spans more than one epoch)."
        },
    )
    do_sample: bool = field(default=True, metadata={"help": "Self-play: sample (True) or decode greedily (False)."})

    def __post_init__(self):
        if _launched_data_parallel_on_cpu() and not self.use_cpu and not self.deepspeed:
            # transformers uses the process group on a CPU machine only with use_cpu=True; without it
            # each process of torchrun/accelerate trains a full copy alone, all writing one output_dir.
            self.use_cpu = True
        if isinstance(self.loss_type, (list, tuple)):  # TRL's DPOConfig takes a list of loss types
            if not self.loss_type:
                raise ConfigError("loss_type: give at least one loss type")
            self.loss_type = self.loss_type[0] if len(self.loss_type) == 1 else list(self.loss_type)
        super().__post_init__()
        if self.dataloader_pin_memory and (self.use_cpu or not torch.cuda.is_available()):
            self.dataloader_pin_memory = False  # pinning needs an accelerator; torch warns on every epoch
        check_common_settings(self)
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ConfigError(f"num_train_epochs must be > 0 (or set max_steps), got {self.num_train_epochs}")
        if self.beta <= 0:
            raise ConfigError(f"beta must be > 0, got {self.beta}")
        if self.demo_weight < 0 or self.pref_weight < 0:
            raise ConfigError(f"demo_weight and pref_weight must be >= 0, got {self.demo_weight}, {self.pref_weight}")
        if self.demo_weight == 0 and self.pref_weight == 0:
            raise ConfigError("demo_weight and pref_weight are both 0: nothing to learn from")
        if self.demo_loss not in DEMO_LOSSES:
            raise ConfigError(f"demo_loss must be one of {DEMO_LOSSES}, got '{self.demo_loss}'")
        if self.max_prompt_length is None and self.max_length is not None and self.truncation_mode is None:
            self.max_prompt_length = max(1, self.max_length // 2)
        check_lengths(self.max_length, self.max_prompt_length)
        if not 0.0 <= self.self_play_regen_prob <= 1.0:
            raise ConfigError(f"self_play_regen_prob must be in [0, 1], got {self.self_play_regen_prob}")
        if self.self_play_round_steps is not None and self.self_play_round_steps < 1:
            raise ConfigError(f"self_play_round_steps must be >= 1, got {self.self_play_round_steps}")
        if self.self_play_round_epochs <= 0:
            raise ConfigError(f"self_play_round_epochs must be > 0, got {self.self_play_round_epochs}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        self._check_trl_options()
        if self.label_smoothing_factor:
            raise ConfigError(
                f"label_smoothing_factor={self.label_smoothing_factor} is not used by AIHFTrainer: set "
                "label_smoothing (DPO's label smoothing, loss_type sigmoid or robust)"
            )

    def _check_trl_options(self) -> None:
        """TRL's DPO options: loss types of :data:`aihf.losses.PREFERENCE_LOSSES`, their weights and
        label smoothing, TR-DPO, truncation, dataset_num_proc and model_init_kwargs."""
        types = self.loss_type if isinstance(self.loss_type, list) else [self.loss_type]
        for name in types:
            if name not in PREFERENCE_LOSS_TYPES:
                raise ConfigError(f"loss_type must be one of {list(PREFERENCE_LOSS_TYPES)}, got '{name}'")
        if self.loss_weights is not None:
            if len(self.loss_weights) != len(types):
                raise ConfigError(
                    f"loss_weights {self.loss_weights} must give one weight per loss type {types} (TRL's rule)"
                )
            if not all(isinstance(w, (int, float)) and math.isfinite(w) for w in self.loss_weights):
                raise ConfigError(f"loss_weights must be finite numbers, got {self.loss_weights}")
        takers = [name for name in types if PREFERENCE_LOSSES[name].label_smoothing is not None]
        for name in takers or types[:1]:
            smoothing_error = label_smoothing_error(name, self.label_smoothing)
            if smoothing_error:
                raise ConfigError(smoothing_error)
        if self.truncation_mode is not None and self.truncation_mode not in TRUNCATION_MODES:
            raise ConfigError(f"truncation_mode must be one of {TRUNCATION_MODES}, got {self.truncation_mode!r}")
        if self.dataset_num_proc not in (None, 1):
            raise ConfigError(
                f"dataset_num_proc={self.dataset_num_proc}: aihf prepares data in one pass in the main process (so "
                "that an error names its row); unset it"
            )
        if self.sync_ref_model:
            if not 0.0 <= self.ref_model_mixup_alpha <= 1.0:
                raise ConfigError(f"ref_model_mixup_alpha must be in [0, 1], got {self.ref_model_mixup_alpha}")
            if self.ref_model_sync_steps < 1:
                raise ConfigError(f"ref_model_sync_steps must be >= 1, got {self.ref_model_sync_steps}")
            if self.precompute_ref_log_probs:
                raise ConfigError(
                    "sync_ref_model=True updates the reference during training: it cannot be precomputed "
                    "(precompute_ref_log_probs=True)"
                )
        if isinstance(self.model_init_kwargs, str):
            try:
                self.model_init_kwargs = json.loads(self.model_init_kwargs)
            except json.JSONDecodeError as e:
                raise ConfigError(f"model_init_kwargs: not a JSON object ({e})") from None
        if self.model_init_kwargs is not None and not isinstance(self.model_init_kwargs, dict):
            raise ConfigError(f"model_init_kwargs must be a mapping, got {type(self.model_init_kwargs).__name__}")


def _launched_data_parallel_on_cpu() -> bool:
    """Several processes (torchrun / accelerate launch set WORLD_SIZE) and no GPU-like device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return not accelerator.is_available()
    return not torch.cuda.is_available()
