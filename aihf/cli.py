"""Command line: ``aihf train --config run.yaml [--field value ...]`` and ``aihf quickstart``.

Every field of :class:`ModelArguments`, :class:`DataArguments`, :class:`RunArguments` and
:class:`aihf.llm.AIHFConfig` (which includes all of ``transformers.TrainingArguments``) can be
set in the YAML file or as a flag; flags win. ``aihf train --help`` lists them all.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any

METHODS = ("aihf", "dpo", "sft", "spin", "sft_then_dpo")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Policy to align: a local folder or a Hugging Face Hub model id."}
    )
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Tokenizer (default: the model's)."})
    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Frozen reference model (default: a copy of the policy, or the base model under LoRA)."},
    )
    gguf_file: str | None = field(default=None, metadata={"help": "Load the model from this GGUF file in the folder."})
    dtype: str = field(
        default="float32",
        metadata={"help": "Weights dtype.", "choices": ["float32", "bfloat16", "float16", "auto"]},
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "e.g. sdpa, eager, flash_attention_2."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run model code shipped with the checkpoint (off unless you trust it)."}
    )
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules to adapt (default: all linear layers)."}
    )


@dataclass
class DataArguments:
    demonstrations: str | None = field(
        default=None,
        metadata={"help": "Demonstrations: a .jsonl/.json/.csv/.parquet file, a save_to_disk folder or a Hub id."},
    )
    preferences: str | None = field(default=None, metadata={"help": "Preference pairs, same kinds of source."})
    eval_demonstrations: str | None = field(default=None, metadata={"help": "Held-out demonstrations."})
    eval_preferences: str | None = field(default=None, metadata={"help": "Held-out preference pairs."})
    demonstrations_split: str = field(
        default="train", metadata={"help": "Split of a Hub dataset or DatasetDict folder to read demonstrations from."}
    )
    preferences_split: str = field(default="train", metadata={"help": "Split to read preferences from."})
    eval_split: str = field(default="test", metadata={"help": "Split to read both eval sources from."})


@dataclass
class RunArguments:
    method: str = field(
        default="aihf",
        metadata={
            "help": "aihf: use demo_weight/pref_weight/demo_loss as set; dpo: demo_weight=0; sft: pref_weight=0 "
            "with nll; spin: pref_weight=0 with self_play; sft_then_dpo: the two-stage baseline.",
            "choices": list(METHODS),
        },
    )
    sft_num_train_epochs: float | None = field(
        default=None, metadata={"help": "sft_then_dpo: epochs of the SFT stage (default: num_train_epochs)."}
    )
    sft_max_steps: int | None = field(
        default=None, metadata={"help": "sft_then_dpo: steps of the SFT stage (default: max_steps)."}
    )
    sft_learning_rate: float | None = field(
        default=None, metadata={"help": "sft_then_dpo: learning rate of the SFT stage (default: learning_rate)."}
    )


def _parser():
    from transformers import HfArgumentParser

    from .llm.config import AIHFConfig

    return HfArgumentParser(
        (ModelArguments, DataArguments, RunArguments, AIHFConfig),
        prog="aihf train",
        description="Align a causal LM with demonstrations and preferences in one stage (AIHF).",
    )


def parse_train_args(argv: list[str]):
    """Parse ``--config file.yaml`` plus flag overrides into the four argument dataclasses."""
    import yaml

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    parser = _parser()
    if known.config:
        try:
            with open(known.config) as f:
                values = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise SystemExit(f"aihf train: cannot read config {known.config}: {e}") from e
        if not isinstance(values, dict):
            raise SystemExit(f"aihf train: {known.config} must hold a mapping of field: value")
        dests = {a.dest for a in parser._actions}
        unknown = sorted(set(values) - dests)
        if unknown:
            raise SystemExit(f"aihf train: unknown field(s) in {known.config}: {', '.join(unknown)}")
        # argparse converts string defaults with the field's type, so YAML strings work too.
        parser.set_defaults(**{k: (str(v) if isinstance(v, float) else v) for k, v in values.items()})
    parsed = parser.parse_args_into_dataclasses(rest)
    _check_choices(parsed, known.config)
    model_args, data_args, run_args, config = parsed
    if not model_args.model_name_or_path:
        raise SystemExit("aihf train: model_name_or_path is required (in the config or as --model_name_or_path)")
    return model_args, data_args, run_args, config


def _check_choices(parsed, config_file: str | None) -> None:
    """argparse checks ``choices`` on flags but not on defaults, which is where YAML values go."""
    import dataclasses

    for obj in parsed:
        for f in dataclasses.fields(obj):
            choices = f.metadata.get("choices")
            value = getattr(obj, f.name)
            if choices and value is not None and value not in choices:
                raise SystemExit(
                    f"aihf train: {f.name}={value!r} (from {config_file or 'the defaults'}) is not one of {choices}"
                )


def apply_method(config, method: str):
    """Set the loss weights that make ``method`` out of AIHF."""
    if method == "dpo":
        config.demo_weight = 0.0
    elif method == "sft":
        config.pref_weight, config.demo_loss = 0.0, "nll"
    elif method == "spin":
        config.pref_weight, config.demo_loss = 0.0, "self_play"
    if config.demo_weight == 0 and config.pref_weight == 0:
        raise SystemExit("aihf train: demo_weight and pref_weight are both 0")
    return config


def load_model_and_tokenizer(model_args: ModelArguments):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": model_args.trust_remote_code}
    if model_args.gguf_file:
        kwargs["gguf_file"] = model_args.gguf_file
    if model_args.tokenizer_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(
            model_args.tokenizer_name_or_path, trust_remote_code=model_args.trust_remote_code
        )
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, **kwargs)
    if model_args.dtype != "auto":
        kwargs["dtype"] = getattr(torch, model_args.dtype)
    else:
        kwargs["dtype"] = "auto"
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if model_args.gguf_file:
        from transformers import GgufConfig

        # Unpacked into dense weights: the Trainer refuses to fine-tune GGUF blocks.
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
    ref_path = model_args.ref_model_name_or_path
    if ref_path is None and not model_args.use_peft and _zero3():
        # ZeRO-3 partitions the policy at load time, so the reference is loaded, not copied.
        ref_path = model_args.model_name_or_path
    ref = None
    if ref_path:
        if ref_path != model_args.model_name_or_path:
            kwargs.pop("gguf_file", None)
            kwargs.pop("quantization_config", None)
        ref = AutoModelForCausalLM.from_pretrained(ref_path, **kwargs)
    return model, ref, tokenizer


def _zero3() -> bool:
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def lora_config(model_args: ModelArguments):
    if not model_args.use_peft:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules or "all-linear",
        task_type="CAUSAL_LM",
    )


def train(argv: list[str]) -> dict:
    """``aihf train``: returns the final training metrics (also written to the output folder)."""
    from .llm.pipelines import sft_stage_args, sft_then_dpo
    from .llm.trainer import AIHFTrainer

    model_args, data_args, run_args, config = parse_train_args(argv)
    config = apply_method(config, run_args.method)
    # Read the data before loading the model, so a malformed file fails in seconds, not minutes.
    demos = _source(data_args.demonstrations, data_args.demonstrations_split)
    prefs = _source(data_args.preferences, data_args.preferences_split)
    eval_demos = _source(data_args.eval_demonstrations, data_args.eval_split)
    eval_prefs = _source(data_args.eval_preferences, data_args.eval_split)
    model, ref, tokenizer = load_model_and_tokenizer(model_args)
    peft_config = lora_config(model_args)
    resume: Any = config.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        resume = resume.lower() == "true"

    if run_args.method == "sft_then_dpo":
        unsupported = {
            "eval_demonstrations": data_args.eval_demonstrations,
            "eval_preferences": data_args.eval_preferences,
            "ref_model_name_or_path": model_args.ref_model_name_or_path,
            "resume_from_checkpoint": resume or None,
        }
        given = [name for name, value in unsupported.items() if value]
        if given:
            raise SystemExit(f"aihf train: --method sft_then_dpo does not support {', '.join(given)} yet")
        overrides = {
            k: v
            for k, v in (
                ("num_train_epochs", run_args.sft_num_train_epochs),
                ("max_steps", run_args.sft_max_steps),
                ("learning_rate", run_args.sft_learning_rate),
            )
            if v is not None
        }
        sft_args = sft_stage_args(config, **overrides)
        result = sft_then_dpo(
            model,
            config,
            demos,
            prefs,
            tokenizer,
            sft_args=sft_args,
            peft_config=peft_config,
        )
        metrics = {"sft": result.sft_trainer.state.log_history[-1], "dpo": result.dpo_trainer.state.log_history[-1]}
    else:
        trainer = AIHFTrainer(
            model,
            ref_model=ref,
            args=config,
            demonstrations=demos,
            preferences=prefs,
            eval_demonstrations=eval_demos,
            eval_preferences=eval_prefs,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        output = trainer.train(resume_from_checkpoint=resume or None)
        trainer.save_model()
        trainer.save_state()
        metrics = dict(output.metrics)
        if trainer.eval_dataset is not None:
            metrics.update(trainer.evaluate())
        trainer.save_metrics("all", metrics)
    return metrics


def _source(source: str | None, split: str):
    """Read a source up front (files, save_to_disk folders, Hub ids with their split)."""
    if source is None:
        return None
    from .data.sources import read_rows

    return read_rows(source, split=split)


def _leave_process_group() -> None:
    """Tear down torch.distributed after a successful run.

    Left to interpreter shutdown, gloo's worker threads can still hold tensors while Python is
    being finalised, and the process dies with SIGABRT ("terminate called without an active
    exception") after all the work is saved. Only on success: destroying the group while
    another rank is stuck in a collective would hang instead of failing.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "train": "align a causal LM (see 'aihf train --help')",
        "quickstart": "the built-in default task, offline, end to end (see 'aihf quickstart --help')",
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: aihf <command> [options]\n\ncommands:")
        for name, text in commands.items():
            print(f"  {name:<11} {text}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        metrics = train(rest)
        _leave_process_group()
        print(json.dumps(metrics, indent=2, default=str))
        return 0
    from .tasks.quickstart import main as quickstart_main

    return quickstart_main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
