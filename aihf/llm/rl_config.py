"""Configuration of :class:`aihf.llm.AIHFRLTrainer`: ``transformers.TrainingArguments`` plus AIHF-RL's fields.

Field help strings double as the command-line help of ``aihf train --method aihf_rl``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from ..data.tokenize import check_lengths
from ..errors import ConfigError
from .base_config import AIHFBaseConfig, check_common_settings
from .reward_model import REWARD_READOUTS

RL_DEMO_LOSSES = ("logistic", "linear")
RL_PROMPT_SOURCES = ("all", "demonstrations", "preferences")

_ROUNDS = "AIHF-RL trains in rounds, not in epochs: set num_rounds (or max_steps, which counts rounds)"
_EVAL = "no epochs in AIHF-RL: eval_strategy steps (eval_steps counts rounds) or no (every round)"
# Inherited TrainingArguments fields that AIHFRLTrainer's round loop does not act on, each with
# when it counts as set and what to do instead: refused rather than silently ignored. (max_steps,
# logging_first_step, eval_strategy steps/no, eval_steps, eval_delay, eval_on_start, report_to, save_strategy
# steps/epoch/no and gradient_accumulation_steps are honoured.)
UNUSED_TRAINING_ARGUMENTS: dict[str, tuple] = {
    "num_train_epochs": (lambda v: v != 3.0, _ROUNDS),
    "eval_strategy": (lambda v: v == "epoch", _EVAL),
    "per_device_eval_batch_size": (lambda v: v != 8, "evaluation batches hold reward_batch_size pairs"),
    "logging_strategy": (lambda v: v == "epoch", "no epochs in AIHF-RL: logging_steps counts rounds"),
    "save_strategy": (lambda v: v == "best", "save_steps counts rounds (save_strategy steps, epoch or no)"),
    "load_best_model_at_end": (bool, "no best model is tracked"),
    "metric_for_best_model": (lambda v: v is not None, "no best model is tracked"),
    "fp16": (bool, "use bf16=True for mixed precision"),
    "gradient_checkpointing": (bool, "not supported by AIHF-RL"),
    "optim": (lambda v: v not in ("adamw_torch", "adamw_torch_fused"), "both optimizers are torch AdamW"),
    "optim_args": (lambda v: v is not None, "both optimizers are torch AdamW"),
    "lr_scheduler_kwargs": (bool, "not passed to the schedulers"),
    "label_smoothing_factor": (bool, "no label smoothing in AIHF-RL"),
    "torch_compile": (bool, "not supported by AIHF-RL (generation_backend='compiled' compiles the decode step)"),
    "neftune_noise_alpha": (lambda v: v is not None, "not supported by AIHF-RL"),
    "data_seed": (lambda v: v is not None, "the data order follows seed"),
    "auto_find_batch_size": (bool, "not supported by AIHF-RL"),
    "use_liger_kernel": (bool, "not supported by AIHF-RL"),
    "push_to_hub": (bool, "push the saved output_dir yourself"),
    "deepspeed": (bool, "AIHF-RL runs plain data parallelism (torchrun)"),
    "fsdp": (bool, "AIHF-RL runs plain data parallelism (torchrun)"),
}
# Set in a config handed to sft_then_rlhf, these size its SFT stage (its RL stage resets them); the trainer
# refuses those of them that it does not honour (num_train_epochs) and reads max_steps as rounds.
ROUND_FIELDS = ("max_steps", "num_train_epochs")


def unused_setting_error(args: TrainingArguments, names) -> ConfigError | None:
    """A one-line :class:`aihf.ConfigError` for the first of ``names`` (keys of
    :data:`UNUSED_TRAINING_ARGUMENTS`) that ``args`` sets although AIHF-RL would ignore it, else None."""
    for name in names:
        is_set, hint = UNUSED_TRAINING_ARGUMENTS[name]
        value = getattr(args, name, None)
        if value is not None and is_set(value):
            shown = getattr(value, "value", value)
            return ConfigError(f"{name}={shown!r} is not used by AIHF-RL: {hint}")
    return None


@dataclass
class AIHFRLConfig(AIHFBaseConfig):
    """Training arguments for AIHF-RL (method.md, instantiation 1): an explicit reward model and
    the policy learned in alternating rounds.

    Each round runs ``policy_steps_per_round`` KL-regularised RL steps on the current reward
    (RLOO with ``num_generations`` samples per prompt; PPO-clip over ``num_ppo_epochs`` epochs
    when that is > 1), then ``reward_steps_per_round`` reward steps on
    ``pref_weight * BT(preferences) + demo_weight * D(demonstration vs policy sample)``.
    ``demo_weight=0`` with ``reward_pretrain_steps > 0`` and ``freeze_reward_model`` is RLHF;
    ``pref_weight=0`` is ML-IRL ("RFT").

    ``learning_rate`` is the policy's; the reward model has ``reward_learning_rate``. Rounds, not
    optimizer steps, are the unit of ``max_steps`` (when > 0 it replaces ``num_rounds``), ``logging_steps``
    and ``save_steps``, as seen by ``transformers`` callbacks. ``per_device_train_batch_size`` counts prompts
    per policy step and process (TRL counts completions), each sampled ``num_generations`` times;
    ``gradient_accumulation_steps = g`` makes a policy step take ``g`` such batches, run forward/backward in
    ``g`` parts. ``eval_strategy='no'`` (the default) evaluates the reward model on the eval preferences after
    every round, ``'steps'`` every ``eval_steps`` rounds. Inherited fields that the AIHF-RL loop does not act on
    (:data:`UNUSED_TRAINING_ARGUMENTS`: ``fp16``, ``gradient_checkpointing``, ...) raise :class:`aihf.ConfigError`
    when set;
    ``num_train_epochs`` (set ``num_rounds``) is refused by :class:`AIHFRLTrainer`, since ``sft_then_rlhf``
    reads it for its SFT stage.
    """

    # Overridden TrainingArguments defaults.
    # AIHF-RL's own loop logs once per round, and a round is many updates: every round by default.
    logging_steps: float = field(default=1, metadata={"help": "Log every X rounds."})
    save_steps: float = field(default=10, metadata={"help": "Save a checkpoint every X rounds (save_strategy=steps)."})
    lr_scheduler_type: str = field(
        default="constant", metadata={"help": "Schedule of both learning rates over all policy/reward steps."}
    )

    # Rounds.
    num_rounds: int = field(default=10, metadata={"help": "Rounds of (policy steps -> samples -> reward steps)."})
    policy_steps_per_round: int = field(
        default=4,
        metadata={
            "help": "Policy steps per round, each on new samples (1 was the old default: with a perfect reward it "
            "barely moved the policy; docs/aihf_rl.md)."
        },
    )
    reward_steps_per_round: int = field(
        default=4,
        metadata={"help": "Reward-model optimizer updates per round, each on new preference pairs (docs/aihf_rl.md)."},
    )

    # The objective.
    # The KL penalty of RL steps on an explicit reward (>= 0, 0 allowed), smaller than DPO's beta.
    beta: float = field(
        default=0.05, metadata={"help": "KL strength beta >= 0: reward minus beta * log(pi/pi_ref) per sample."}
    )
    demo_loss: str = field(
        default="logistic",
        metadata={
            "help": "Demonstration-vs-sample term: 'logistic' -log sigmoid(r(yE) - r(y)) or 'linear' "
            "-(r(yE) - r(y)) with rewards clamped to +/- reward_clamp.",
            "choices": list(RL_DEMO_LOSSES),
        },
    )
    reward_clamp: float = field(
        default=10.0, metadata={"help": "demo_loss=linear: rewards are clamped to [-reward_clamp, reward_clamp]."}
    )
    center_rewards_coefficient: float | None = field(
        default=None,
        metadata={"help": "Add coefficient * mean(r^2) over the reward step's scores (TRL's reward centring)."},
    )

    # Policy step.
    num_generations: int = field(default=4, metadata={"help": "Samples per prompt k (>= 2) for the RLOO baseline."})
    num_ppo_epochs: int = field(
        default=1, metadata={"help": "Updates over each batch of samples; > 1 uses PPO's clipped surrogate."}
    )
    num_mini_batches: int = field(default=1, metadata={"help": "Mini-batches per PPO epoch (prompts split evenly)."})
    cliprange: float = field(default=0.2, metadata={"help": "PPO clip range epsilon."})
    rl_prompts: str = field(
        default="all",
        metadata={
            "help": "Prompts the policy is trained on: those of the demonstrations and preferences used, or one "
            "source.",
            "choices": list(RL_PROMPT_SOURCES),
        },
    )
    whiten_rewards: bool = field(
        default=False,
        metadata={
            "help": "Whiten the policy's reward scores over the batch (mean 0, std 1) before the KL penalty. Off by "
            "default: under AdamW it only changes the reward-to-KL ratio, and it blows up noise once samples score "
            "alike (docs/aihf_rl.md)."
        },
    )
    reward_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "Weights of the policy's reward terms: the reward model's score first, then each reward function "
            "given to the trainer (Python API: reward_funcs=[fn]). Default 1 each; [0, 1] trains on the function alone."
        },
    )
    reward_clip_range: float | None = field(
        default=None, metadata={"help": "Clip the reward model's scores to +/- this before the KL penalty."}
    )
    normalize_advantages: bool = field(default=False, metadata={"help": "Whiten the RLOO advantages over the batch."})
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={
            "help": "Subtract this from the score of samples that reach max_new_tokens without an end token. The "
            "reward model scores a cut sample like a finished one with the same content (every answer it scores ends "
            "in one end token), so this is the only place where finishing counts; TRL's name."
        },
    )

    # Reward step.
    reward_learning_rate: float = field(default=1e-5, metadata={"help": "Reward-model learning rate (AdamW)."})
    reward_batch_size: int = field(default=8, metadata={"help": "Preference pairs per reward step."})
    reward_demo_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Demonstrations per reward step (fresh_reward_samples), each against num_generations policy "
            "samples. Default: per_device_train_batch_size."
        },
    )
    fresh_reward_samples: bool = field(
        default=False,
        metadata={
            "help": "Each reward step takes reward_demo_batch_size new demonstrations and samples on their prompts "
            "drawn from the policy after the round's policy steps (all of one age). False: reuse the samples of the "
            "round's last policy step on the demonstration prompts it drew (one update older; no extra generation)."
        },
    )
    reward_pretrain_steps: int = field(
        default=0, metadata={"help": "Bradley-Terry reward steps on the preferences before the first round."}
    )
    reward_pretrain_eval_steps: int = field(
        default=10, metadata={"help": "Evaluate held-out pair accuracy every X pretraining steps (early stopping)."}
    )
    reward_pretrain_patience: int | None = field(
        default=None,
        metadata={
            "help": "Stop pretraining after this many evaluations without a better held-out pair accuracy, keeping the "
            "best reward model (held out: the evaluation preferences, else reward_holdout_fraction of the pairs)."
        },
    )
    reward_holdout_fraction: float = field(
        default=0.1,
        metadata={"help": "Share of preference pairs held out for early stopping when no eval preferences are given."},
    )
    freeze_reward_model: bool = field(
        default=False, metadata={"help": "No reward steps during the rounds (RLHF: the pretrained reward is fixed)."}
    )
    reward_freeze_layers: int = field(
        default=0, metadata={"help": "Freeze the reward model's embeddings and its lowest X transformer blocks."}
    )
    reward_readout: str | None = field(
        default=None,
        metadata={
            "help": "How r(x, y) is read from the reward model: 'last' (the score head at the last token) or 'mean' "
            "(the mean of the head's per-token scores over the completion's tokens, as the paper's authors score). "
            "Default: 'mean' for a new reward model (from the policy), the recorded one for a saved aihf reward "
            "model, 'last' for any other given classifier (as TRL trains them).",
            "choices": list(REWARD_READOUTS),
        },
    )

    # Data.
    # Policy samples are generated, then scored by the reward model and both policies: kept shorter.
    max_length: int | None = field(
        default=512, metadata={"help": "Maximum tokens of prompt + completion; completions are cut on the right."}
    )

    # Generation.
    # Every RL step samples num_generations answers per prompt: shorter samples by default.
    max_new_tokens: int = field(default=64, metadata={"help": "Tokens generated per sample at most."})

    def __post_init__(self):
        # Before transformers' own checks, which would refuse some of these with a longer message.
        error = unused_setting_error(self, [n for n in UNUSED_TRAINING_ARGUMENTS if n not in ROUND_FIELDS])
        if error is not None:
            raise error
        super().__post_init__()
        if self.dataloader_pin_memory and (self.use_cpu or not torch.cuda.is_available()):
            self.dataloader_pin_memory = False
        check_common_settings(self)
        positive_ints = (
            "num_rounds",
            "policy_steps_per_round",
            "num_ppo_epochs",
            "num_mini_batches",
            "reward_batch_size",
            "max_new_tokens",
            "reward_pretrain_eval_steps",
        )
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("reward_steps_per_round", "reward_pretrain_steps", "reward_freeze_layers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.reward_demo_batch_size is not None and self.reward_demo_batch_size < 1:
            raise ConfigError(f"reward_demo_batch_size must be >= 1, got {self.reward_demo_batch_size}")
        if self.reward_readout is not None and self.reward_readout not in REWARD_READOUTS:
            raise ConfigError(f"reward_readout must be one of {REWARD_READOUTS}, got '{self.reward_readout}'")
        if self.reward_weights is not None and not all(_finite_number(w) for w in self.reward_weights):
            raise ConfigError(f"reward_weights must be finite numbers, got {self.reward_weights}")
        if self.num_generations < 2:
            raise ConfigError(
                f"num_generations must be >= 2 (RLOO's leave-one-out baseline), got {self.num_generations}"
            )
        if self.beta < 0:
            raise ConfigError(f"beta must be >= 0, got {self.beta}")
        if self.demo_weight < 0 or self.pref_weight < 0:
            raise ConfigError(f"demo_weight and pref_weight must be >= 0, got {self.demo_weight}, {self.pref_weight}")
        if self.demo_weight == 0 and self.pref_weight == 0:
            raise ConfigError("demo_weight and pref_weight are both 0: the reward model has nothing to learn from")
        if self.demo_loss not in RL_DEMO_LOSSES:
            raise ConfigError(f"demo_loss must be one of {RL_DEMO_LOSSES}, got '{self.demo_loss}'")
        if self.rl_prompts not in RL_PROMPT_SOURCES:
            raise ConfigError(f"rl_prompts must be one of {RL_PROMPT_SOURCES}, got '{self.rl_prompts}'")
        if self.reward_clamp <= 0:
            raise ConfigError(f"reward_clamp must be > 0, got {self.reward_clamp}")
        if self.cliprange <= 0:
            raise ConfigError(f"cliprange must be > 0, got {self.cliprange}")
        if self.reward_clip_range is not None and self.reward_clip_range <= 0:
            raise ConfigError(f"reward_clip_range must be > 0, got {self.reward_clip_range}")
        if not 0.0 < self.reward_holdout_fraction < 1.0:
            raise ConfigError(f"reward_holdout_fraction must be in (0, 1), got {self.reward_holdout_fraction}")
        if self.reward_pretrain_patience is not None and self.reward_pretrain_patience < 1:
            raise ConfigError(f"reward_pretrain_patience must be >= 1, got {self.reward_pretrain_patience}")
        if self.per_device_train_batch_size % self.num_mini_batches:
            raise ConfigError(
                f"per_device_train_batch_size={self.per_device_train_batch_size} prompts cannot be split into "
                f"num_mini_batches={self.num_mini_batches}"
            )
        if self.gradient_accumulation_steps < 1:
            raise ConfigError(f"gradient_accumulation_steps must be >= 1, got {self.gradient_accumulation_steps}")
        if self.max_prompt_length is None and self.max_length is not None:
            self.max_prompt_length = max(1, self.max_length // 2)
        try:
            check_lengths(self.max_length, self.max_prompt_length)
        except ValueError as e:
            raise ConfigError(str(e)) from e


def _finite_number(value: object) -> bool:
    import numbers

    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
