"""Command-line pieces of AIHF-RL: ``train_rl(argv)`` (methods aihf_rl, rlhf, rft, sft_then_rlhf) and
``eval_reward(argv)``.

Meant to be registered as ``aihf train --method aihf_rl|rlhf|rft|sft_then_rlhf`` and
``aihf eval-reward``. Every field of :class:`RLModelArguments`, :class:`RLDataArguments`,
:class:`RLRunArguments` and :class:`aihf.llm.AIHFRLConfig` (which includes all of
``transformers.TrainingArguments``) can be set in a YAML file given as ``--config`` or as a
flag; flags win. Bad settings raise :class:`aihf.ConfigError`, bad data :class:`aihf.DataError`,
both before any model is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

RL_METHODS = ("aihf_rl", "rlhf", "rft", "sft_then_rlhf")


@dataclass
class RLModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Policy to align: a local folder or a Hugging Face Hub model id."}
    )
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Tokenizer (default: the model's)."})
    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Frozen reference model (default: a copy of the policy, or the base model under LoRA)."},
    )
    reward_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Reward model to start from (default: the policy's weights with a new score head)."},
    )
    dtype: str = field(
        default="float32", metadata={"help": "Weights dtype.", "choices": ["float32", "bfloat16", "float16"]}
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "e.g. sdpa, eager, flash_attention_2."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run model code shipped with the checkpoint (off unless you trust it)."}
    )
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters of the policy."})
    reward_use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters of the reward model."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules to adapt (default: all linear layers)."}
    )


@dataclass
class RLDataArguments:
    demonstrations: str | None = field(
        default=None,
        metadata={"help": "Demonstrations: a .jsonl/.json/.csv/.parquet file, a save_to_disk folder or a Hub id."},
    )
    preferences: str | None = field(default=None, metadata={"help": "Preference pairs, same kinds of source."})
    eval_preferences: str | None = field(
        default=None, metadata={"help": "Held-out pairs: reward/eval_accuracy and reward/eval_margin every round."}
    )
    demonstrations_split: str = field(default="train", metadata={"help": "Split to read demonstrations from."})
    preferences_split: str = field(default="train", metadata={"help": "Split to read preferences from."})
    eval_split: str = field(default="test", metadata={"help": "Split to read the eval preferences from."})


@dataclass
class RLRunArguments:
    method: str = field(
        default="aihf_rl",
        metadata={
            "help": "aihf_rl: demo_weight/pref_weight as set; rlhf: demo_weight=0 and the reward model fitted on the "
            "preferences first (reward_pretrain_steps), then frozen; rft: pref_weight=0 (ML-IRL); sft_then_rlhf: "
            "SFT on the demonstrations, then rlhf from the SFT model.",
            "choices": list(RL_METHODS),
        },
    )
    sft_max_steps: int | None = field(
        default=None, metadata={"help": "sft_then_rlhf: steps of the SFT stage (default: 3 epochs)."}
    )
    sft_num_train_epochs: float | None = field(default=None, metadata={"help": "sft_then_rlhf: SFT epochs."})
    sft_learning_rate: float | None = field(
        default=None, metadata={"help": "sft_then_rlhf: SFT learning rate (default: learning_rate)."}
    )


def _parser(prog: str, dataclass_types: tuple, description: str):
    from transformers import HfArgumentParser

    return HfArgumentParser(dataclass_types, prog=prog, description=description)


def parse_with_config(parser, argv: list[str], prog: str) -> tuple:
    """``--config file.yaml`` (a mapping of field: value) plus flags, flags winning, into the
    parser's dataclasses; ``choices`` are checked for YAML values too. Raises :class:`ConfigError`."""
    import yaml

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    if known.config:
        try:
            with open(known.config) as f:
                values = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{prog}: cannot read config {known.config}: {e}") from e
        if not isinstance(values, dict):
            raise ConfigError(f"{prog}: {known.config} must hold a mapping of field: value")
        unknown = sorted(set(values) - {a.dest for a in parser._actions})
        if unknown:
            raise ConfigError(f"{prog}: unknown field(s) in {known.config}: {', '.join(unknown)}")
        # argparse converts string defaults with the field's type, so YAML scalars work too.
        parser.set_defaults(**{k: (str(v) if isinstance(v, float) else v) for k, v in values.items()})
    try:
        parsed = parser.parse_args_into_dataclasses(rest)
    except ConfigError as e:
        raise ConfigError(f"{prog}: {e} (from {known.config or 'the flags'})") from e
    for obj in parsed:
        for f in dataclasses.fields(obj):
            choices = f.metadata.get("choices")
            value = getattr(obj, f.name)
            if choices and value is not None and value not in choices:
                where = known.config or "the flags"
                raise ConfigError(f"{prog}: {f.name}={value!r} (from {where}) is not one of {choices}")
    return parsed


def parse_rl_args(argv: list[str]):
    """The four argument objects of ``aihf train --method aihf_rl|rlhf|rft|sft_then_rlhf``."""
    from .llm.rl_config import AIHFRLConfig

    parser = _parser(
        "aihf train",
        (RLModelArguments, RLDataArguments, RLRunArguments, AIHFRLConfig),
        "Align a causal LM with an explicit reward model learned from demonstrations and preferences (AIHF-RL).",
    )
    model_args, data_args, run_args, config = parse_with_config(parser, argv, "aihf train")
    if not model_args.model_name_or_path:
        raise ConfigError("aihf train: model_name_or_path is required (in the config or as --model_name_or_path)")
    return model_args, data_args, run_args, apply_rl_method(config, run_args.method)


def apply_rl_method(config, method: str):
    """The settings that make ``method`` out of AIHF-RL (validated again by the config).
    ``sft_then_rlhf`` is left as given: the pipeline derives each stage's settings itself."""
    if method in ("rlhf", "sft_then_rlhf") and config.reward_pretrain_steps < 1:
        raise ConfigError(
            f"aihf train: --method {method} fits the reward model on the preferences first: "
            "set reward_pretrain_steps > 0 (and reward_pretrain_patience for early stopping)"
        )
    changes: dict[str, Any] = {}
    if method == "rlhf":
        changes = {"demo_weight": 0.0, "freeze_reward_model": True}
    elif method == "rft":
        changes = {"pref_weight": 0.0}
    if not changes:
        return config
    try:
        return dataclasses.replace(config, **changes)
    except ConfigError as e:
        raise ConfigError(f"aihf train: --method {method}: {e}") from e


def _lora(model_args: RLModelArguments, task_type: str):
    from peft import LoraConfig

    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules or "all-linear",
        task_type=task_type,
    )


def _read(source: str | None, split: str):
    if source is None:
        return None
    from .data.sources import read_rows

    return read_rows(source, split=split)


def train_rl(argv: list[str]) -> dict:
    """``aihf train --method aihf_rl|rlhf|rft|sft_then_rlhf``: returns the final metrics (also saved
    as ``all_results.json`` in the output folder)."""
    import json
    import os

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .data import prepare_demonstrations, prepare_preferences
    from .llm.rl_trainer import AIHFRLTrainer, sft_args_from_rl, sft_then_rlhf

    model_args, data_args, run_args, config = parse_rl_args(argv)
    demos = _read(data_args.demonstrations, data_args.demonstrations_split)
    prefs = _read(data_args.preferences, data_args.preferences_split)
    eval_prefs = _read(data_args.eval_preferences, data_args.eval_split)
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.tokenizer_name_or_path or model_args.model_name_or_path,
        trust_remote_code=model_args.trust_remote_code,
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Validate every row before any model is loaded (the trainer tokenises again; that is cheap).
    kw = dict(max_length=config.max_length, max_prompt_length=config.max_prompt_length)
    for rows in (prefs, eval_prefs):
        if rows is not None:
            prepare_preferences(rows, tokenizer, implicit_prompt_marker=config.implicit_prompt_marker, **kw)
    if demos is not None:
        prepare_demonstrations(demos, tokenizer, **kw)

    load_kw: dict[str, Any] = {
        "dtype": getattr(torch, model_args.dtype),
        "trust_remote_code": model_args.trust_remote_code,
    }
    if model_args.attn_implementation:
        load_kw["attn_implementation"] = model_args.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **load_kw)
    peft_config = _lora(model_args, "CAUSAL_LM") if model_args.use_peft else None
    reward_peft_config = _lora(model_args, "SEQ_CLS") if model_args.reward_use_peft else None

    if run_args.method == "sft_then_rlhf":
        unsupported = {
            "ref_model_name_or_path": model_args.ref_model_name_or_path,
            "reward_model_name_or_path": model_args.reward_model_name_or_path,
            "resume_from_checkpoint": config.resume_from_checkpoint,
        }
        given = [name for name, value in unsupported.items() if value]
        if given:
            raise ConfigError(f"aihf train: --method sft_then_rlhf does not support {', '.join(given)} yet")
        overrides = {
            k: v
            for k, v in (
                ("max_steps", run_args.sft_max_steps),
                ("num_train_epochs", run_args.sft_num_train_epochs),
                ("learning_rate", run_args.sft_learning_rate if run_args.sft_learning_rate else config.learning_rate),
            )
            if v is not None
        }
        result = sft_then_rlhf(
            model,
            config,
            demos,
            prefs,
            tokenizer,
            sft_args=sft_args_from_rl(config, **overrides),
            eval_preferences=eval_prefs,
            peft_config=peft_config,
            reward_peft_config=reward_peft_config,
        )
        metrics = {"sft": result.sft_trainer.state.log_history[-1], "rlhf": result.rl_trainer.log_history[-1]}
        output_dir = os.path.join(config.output_dir, "rlhf")
    else:
        ref = None
        if model_args.ref_model_name_or_path:
            ref = AutoModelForCausalLM.from_pretrained(model_args.ref_model_name_or_path, **load_kw)
        trainer = AIHFRLTrainer(
            model,
            ref_model=ref,
            reward_model=model_args.reward_model_name_or_path,
            args=config,
            demonstrations=demos,
            preferences=prefs,
            eval_preferences=eval_prefs,
            processing_class=tokenizer,
            peft_config=peft_config,
            reward_peft_config=reward_peft_config,
        )
        metrics = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
        trainer.save_model()
        output_dir = config.output_dir
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "all_results.json"), "w") as f:
        json.dump(metrics, f, indent=2, default=str)
    return metrics


@dataclass
class EvalRewardArguments:
    reward_model: str | None = field(
        default=None, metadata={"help": "A saved reward model folder (e.g. <output_dir>/reward_model)."}
    )
    preferences: str | None = field(
        default=None, metadata={"help": "Preference pairs: a .jsonl/.json/.csv/.parquet file or a Hub id."}
    )
    preferences_split: str = field(default="test", metadata={"help": "Split of a Hub dataset to read."})
    batch_size: int = field(default=16, metadata={"help": "Pairs scored per forward pass."})
    max_length: int | None = field(default=1024, metadata={"help": "Maximum tokens of prompt + answer."})
    max_prompt_length: int | None = field(default=512, metadata={"help": "Maximum prompt tokens (cut on the left)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run model code shipped with the checkpoint."})


def eval_reward(argv: list[str]) -> dict:
    """``aihf eval-reward --reward_model PATH --preferences FILE``: pairwise accuracy (share of pairs
    with r(chosen) > r(rejected)), mean margin and pair count."""
    import torch
    from transformers import AutoTokenizer

    from .data import prepare_preferences
    from .llm.reward_model import evaluate_reward_model, load_reward_model

    parser = _parser("aihf eval-reward", (EvalRewardArguments,), "Pairwise accuracy of a reward model.")
    (args,) = parse_with_config(parser, argv, "aihf eval-reward")
    for name in ("reward_model", "preferences"):
        if not getattr(args, name):
            raise ConfigError(f"aihf eval-reward: --{name} is required")
    rows = _read(args.preferences, args.preferences_split)
    tokenizer = AutoTokenizer.from_pretrained(args.reward_model, trust_remote_code=args.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    data = prepare_preferences(
        rows, tokenizer, max_length=args.max_length, max_prompt_length=args.max_prompt_length
    )
    model = load_reward_model(
        args.reward_model, tokenizer.pad_token_id, dtype=torch.float32, trust_remote_code=args.trust_remote_code
    )
    return evaluate_reward_model(model, data, tokenizer.pad_token_id, args.batch_size)


def main(argv: list[str] | None = None) -> int:
    """``python -m aihf.cli_rl train|eval-reward ...`` until ``aihf`` registers these commands;
    ``torchrun -m aihf.cli_rl train ...`` for data parallelism. Prints the metrics as JSON."""
    import json
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": train_rl, "eval-reward": eval_reward}
    if not argv or argv[0] not in commands:
        print("usage: python -m aihf.cli_rl {train,eval-reward} [options]")
        return 2
    from .errors import DataError

    try:
        metrics = commands[argv[0]](argv[1:])
    except (ConfigError, DataError) as e:
        print(f"aihf: error: {e}", file=sys.stderr)
        return 2
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    print(json.dumps(metrics, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
