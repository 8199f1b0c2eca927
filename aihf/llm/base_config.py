"""Fields both LLM trainers share: ``transformers.TrainingArguments`` plus the settings that mean the
same in :class:`aihf.llm.AIHFConfig` (implicit reward) and :class:`aihf.llm.AIHFRLConfig` (explicit
reward model), grouped by topic as TRL's ``base_config.py`` groups its own.

A per-method config inherits :class:`AIHFBaseConfig` and redeclares a field only where that method
needs another default, with a comment saying why. Field help strings double as ``aihf train --help``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..data.formats import HH_ASSISTANT_MARKER
from ..errors import ConfigError
from .generation import GENERATION_BACKENDS


@dataclass
class AIHFBaseConfig(TrainingArguments):
    """Settings shared by every aihf LLM method.

    Groups (in field order):

    * **Overridden TrainingArguments defaults**: ``learning_rate=1e-6``, ``logging_steps=10``,
      ``remove_unused_columns=False``, ``overwrite_output_dir`` (a guard, not a deletion flag).
    * **The objective**: ``beta`` (KL strength), ``demo_weight`` / ``pref_weight`` (``w_D``, ``w_P`` of
      method.md (U)), ``use_references_as_demonstrations``, ``disable_dropout``,
      ``skip_nonfinite_steps``.
    * **Data**: ``max_length``, ``max_prompt_length``, ``implicit_prompt_marker``, ``eos_token``,
      ``padding_free``.
    * **Generation** (self-play opponents, AIHF-RL policy samples): ``max_new_tokens``, ``temperature``,
      ``top_p``, ``top_k``, ``generation_batch_size``, ``generation_backend``.

    Each method's own checks run in its ``__post_init__``; :func:`check_common_settings` holds the
    ones every method runs.
    """

    # Overridden TrainingArguments defaults.
    learning_rate: float = field(
        default=1e-6,
        metadata={"help": "Initial learning rate for AdamW (AIHF-RL: the policy's; see reward_learning_rate)."},
    )
    logging_steps: float = field(
        default=10,
        metadata={"help": "Log every X update steps (an integer, or a float in [0, 1) for a ratio of all steps)."},
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: aihf builds its batches with its own collator."}
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
        default=1.0,
        metadata={"help": "Weight w_D of the demonstration term (0: preferences alone, i.e. DPO or RLHF)."},
    )
    pref_weight: float = field(
        default=1.0,
        metadata={"help": "Weight w_P of the preference term (0: demonstrations alone, i.e. SFT, SPIN or ML-IRL)."},
    )
    use_references_as_demonstrations: bool = field(
        default=True,
        metadata={"help": "Add the gold 'reference' answers of preference rows to the demonstrations."},
    )
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "Set every dropout probability of the trained models (and their frozen copies) to 0."},
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
            "help": "Token that ends every completion and stops sampling. Default: conversations end with the chat "
            "template's end-of-turn token (e.g. <|im_end|>), plain text with the tokenizer's EOS."
        },
    )
    padding_free: bool = field(
        default=False,
        metadata={
            "help": "Pack each batch's sequences end to end into fewer rows (as wide as its longest sequence, "
            "position ids restarting per sequence) so that no compute goes to padding. Same results up to float "
            "rounding; checked at start-up to work with the model (Llama, Qwen2, GPT-2 and most transformers "
            "decoders do)."
        },
    )

    # Generation (self-play opponents; AIHF-RL's policy samples).
    max_new_tokens: int = field(default=128, metadata={"help": "Tokens generated per sample at most."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    top_k: int = field(default=0, metadata={"help": "Sample among the k likeliest tokens (0 = all)."})
    generation_batch_size: int | None = field(
        default=None,
        metadata={"help": "Prompts per generate() call (default: all prompts of a batch or step at once)."},
    )
    generation_backend: str = field(
        default="generate",
        metadata={
            "help": "How samples are drawn: 'generate' (model.generate), 'static' (aihf's decode loop on a "
            "static KV cache, the same samples for a seed) or 'compiled' (that loop with the decode step compiled "
            "by torch.compile: seconds to compile once per batch shape, then faster per token; docs/speed.md)."
        },
    )


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
