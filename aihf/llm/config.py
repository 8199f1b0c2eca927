"""Configuration of :class:`aihf.llm.AIHFTrainer`: ``transformers.TrainingArguments`` plus AIHF's fields.

Field help strings double as ``aihf train --help``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from ..data.formats import HH_ASSISTANT_MARKER
from ..data.tokenize import check_lengths
from ..errors import ConfigError
from ..losses import PREFERENCE_LOSS_TYPES
from .generation import GENERATION_BACKENDS

DEMO_LOSSES = ("nll", "self_play")


@dataclass
class AIHFConfig(TrainingArguments):
    """Training arguments for AIHF with an implicit reward ``r = beta * log(pi / pi_ref)``.

    The loss is ``pref_weight * DPO(preferences) + demo_weight * D(demonstrations)`` where ``D``
    is the demonstration NLL (``demo_loss="nll"``, offline AIHF-DPO) or the self-play term
    against the policy frozen at the start of each round (``demo_loss="self_play"``).
    ``demo_weight=0`` is DPO, ``pref_weight=0`` is SFT (nll) or SPIN (self_play).

    Defaults that differ from ``TrainingArguments``: ``learning_rate=1e-6``, ``logging_steps=10``,
    ``remove_unused_columns=False``.
    """

    # Overridden TrainingArguments defaults.
    learning_rate: float = field(default=1e-6, metadata={"help": "Initial learning rate for AdamW."})
    logging_steps: float = field(
        default=10,
        metadata={"help": "Log every X update steps (an integer, or a float in [0, 1) for a ratio of all steps)."},
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: AIHF batches are built by its own collator."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start a fresh run in an output_dir that already holds another run's checkpoints or model "
            "(its checkpoint-* folders are deleted when training starts). Without it such a run is refused."
        },
    )

    # The objective.
    beta: float = field(
        default=0.1,
        metadata={"help": "KL strength beta > 0: the implicit reward is beta * log(pi / pi_ref)."},
    )
    demo_weight: float = field(
        default=1.0, metadata={"help": "Weight w_D of the demonstration term (0 turns AIHF into DPO)."}
    )
    pref_weight: float = field(
        default=1.0, metadata={"help": "Weight w_P of the preference (DPO) term (0 turns AIHF into SFT or SPIN)."}
    )
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
            "help": "Preference loss, TRL's names: 'sigmoid' (DPO; conservative DPO with label_smoothing > 0), "
            "'robust' (robust DPO), 'ipo' (IPO, beta is its tau), 'hinge' (SLiC hinge on the reward margin).",
            "choices": list(PREFERENCE_LOSS_TYPES),
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
    use_references_as_demonstrations: bool = field(
        default=True,
        metadata={"help": "Add the gold 'reference' answers of preference rows to the demonstrations."},
    )
    disable_dropout: bool = field(
        default=True, metadata={"help": "Set every dropout probability of the policy (and copies) to 0."}
    )
    skip_nonfinite_steps: bool = field(
        default=False,
        metadata={
            "help": "A NaN/inf in a loss term, reward or gradient skips that update (counted as "
            "nonfinite/skipped_steps) instead of stopping the run with an error naming the step and term."
        },
    )

    # Data.
    max_length: int | None = field(
        default=1024, metadata={"help": "Maximum tokens of prompt + completion; completions are cut on the right."}
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Maximum prompt tokens; longer prompts are cut on the left (BOS kept). Default: half of max_length."
        },
    )
    implicit_prompt_marker: str | None = field(
        default=HH_ASSISTANT_MARKER,
        metadata={
            "help": "For preference rows without 'prompt': cut the shared prefix of chosen/rejected after the last "
            "occurrence of this marker (Anthropic-HH's assistant turn); else at the last token boundary both share."
        },
    )
    eos_token: str | None = field(
        default=None,
        metadata={
            "help": "Token that ends every completion and stops self-play sampling. Default: conversations end with "
            "the chat template's end-of-turn token (e.g. <|im_end|>), plain text with the tokenizer's EOS."
        },
    )
    padding_free: bool = field(
        default=False,
        metadata={
            "help": "Pack each batch's sequences end to end into fewer rows (as wide as its longest sequence, "
            "position ids restarting per sequence) so that no compute goes to padding. Same losses up to float "
            "rounding; checked at start-up to work with the model (Llama, Qwen2, GPT-2 and most transformers "
            "decoders do)."
        },
    )
    prefix_sharing: bool = field(
        default=False,
        metadata={
            "help": "Run each preference pair's prompt once for both answers: one packed sequence prompt + chosen + "
            "rejected, the rejected answer masked from the chosen one (a 4D attention mask). Implies packing. Same "
            "losses up to float rounding; checked at start-up to work with the model."
        },
    )
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "Pad batches to a multiple of this length (helps GPU kernels)."}
    )

    # Self-play.
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
    max_new_tokens: int = field(default=128, metadata={"help": "Self-play: tokens generated per sample at most."})
    temperature: float = field(default=1.0, metadata={"help": "Self-play: sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Self-play: nucleus sampling threshold."})
    top_k: int = field(default=0, metadata={"help": "Self-play: sample among the k likeliest tokens (0 = all)."})
    do_sample: bool = field(default=True, metadata={"help": "Self-play: sample (True) or decode greedily (False)."})
    generation_batch_size: int | None = field(
        default=None,
        metadata={"help": "Self-play: prompts per generate() call (default: the whole micro-batch)."},
    )
    generation_backend: str = field(
        default="generate",
        metadata={
            "help": "Self-play: how samples are drawn: 'generate' (model.generate), 'static' (aihf's decode loop on a "
            "static KV cache, the same samples for a seed) or 'compiled' (that loop with the decode step compiled "
            "by torch.compile: seconds to compile once per batch shape, then faster per token; docs/speed.md)."
        },
    )

    def __post_init__(self):
        if _launched_data_parallel_on_cpu() and not self.use_cpu and not self.deepspeed:
            # transformers uses the process group on a CPU machine only with use_cpu=True; without it
            # each process of torchrun/accelerate trains a full copy alone, all writing one output_dir.
            self.use_cpu = True
        if isinstance(self.loss_type, (list, tuple)):  # TRL's DPOConfig takes a list of loss types
            if len(self.loss_type) != 1:
                raise ConfigError(f"loss_type: aihf takes one loss type, got {list(self.loss_type)}")
            self.loss_type = self.loss_type[0]
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
        if self.max_prompt_length is None and self.max_length is not None:
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
        if self.loss_type not in PREFERENCE_LOSS_TYPES:
            raise ConfigError(f"loss_type must be one of {list(PREFERENCE_LOSS_TYPES)}, got '{self.loss_type}'")
        if not 0.0 <= self.label_smoothing <= 0.5 or (self.loss_type == "robust" and self.label_smoothing == 0.5):
            raise ConfigError(
                f"label_smoothing must be in [0, 0.5] ([0, 0.5) for 'robust'), got {self.label_smoothing}"
            )
        if self.label_smoothing_factor:
            raise ConfigError(
                f"label_smoothing_factor={self.label_smoothing_factor} is not used by AIHFTrainer: set "
                "label_smoothing (DPO's label smoothing, loss_type sigmoid or robust)"
            )
        if self.label_smoothing and self.loss_type in ("ipo", "hinge"):
            raise ConfigError(f"label_smoothing={self.label_smoothing} has no meaning for loss_type '{self.loss_type}'")


def check_common_settings(args: TrainingArguments) -> None:
    """Settings of ``TrainingArguments`` and of sampling that transformers or torch would only refuse
    deep inside training (an optimizer, a dataloader, ``generate``), checked at start-up instead.
    Raises :class:`aihf.ConfigError` naming the setting."""
    if not str(args.output_dir or "").strip():
        raise ConfigError("output_dir must be a folder path, got an empty one")
    if args.learning_rate < 0:
        raise ConfigError(f"learning_rate must be >= 0, got {args.learning_rate}")
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(args, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"seed must be in [0, 2**32 - 1], got {args.seed}")
    if args.save_strategy == "steps" and args.save_steps <= 0:
        raise ConfigError(f"save_steps must be > 0 with save_strategy='steps', got {args.save_steps}")
    if args.save_total_limit is not None and args.save_total_limit < 0:
        raise ConfigError(f"save_total_limit must be >= 1 (or unset for no limit), got {args.save_total_limit}")
    if args.temperature <= 0:
        raise ConfigError(f"temperature must be > 0 (do_sample=False decodes greedily), got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {args.top_p}")
    if args.top_k < 0:
        raise ConfigError(f"top_k must be >= 0 (0 = all tokens), got {args.top_k}")
    if args.generation_batch_size is not None and args.generation_batch_size < 1:
        raise ConfigError(f"generation_batch_size must be >= 1 (or unset), got {args.generation_batch_size}")
    if args.generation_backend not in GENERATION_BACKENDS:
        raise ConfigError(
            f"generation_backend must be one of {', '.join(GENERATION_BACKENDS)}, got {args.generation_backend!r}"
        )


def _launched_data_parallel_on_cpu() -> bool:
    """Several processes (torchrun / accelerate launch set WORLD_SIZE) and no GPU-like device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return not accelerator.is_available()
    return not torch.cuda.is_available()
