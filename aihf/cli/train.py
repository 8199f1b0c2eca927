"""``aihf train``: align a causal LM with demonstrations and preferences from the command line.

:func:`train` parses the command line (:mod:`aihf.cli.args`), runs the start-up checks
(:mod:`aihf.cli.checks`: the ``--method`` preset of :mod:`aihf.methods`, paths, every data row, the
output folder) before anything is loaded, then loads the model and trains. The methods with an
explicit reward model (``--method aihf_rl|rlhf|rft|sft_then_rlhf``) go through the same checks and
loading, with their own settings checks and trainer (:mod:`aihf.cli.rl`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from typing import Any

from ..errors import ConfigError
from ..methods import RL_METHODS, STAGES
from . import rl
from .args import ModelArguments, TrainArguments, build_parser, parse_train_args, train_method
from .checks import (
    Sources,
    TrainResult,
    apply_method,
    check_no_resume,
    check_output_dirs,
    check_paths,
    check_sources_given,
    info_after_checks,
    load_error,
    lora_config,
    read_and_validate,
    resume_setting,
    sft_overrides,
    warn_ignored,
)
from .dataset_name import route_dataset_name


# ---------------------------------------------------------------------------------- loading
def load_tokenizer(model_args: ModelArguments):
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": model_args.trust_remote_code}
    if model_args.gguf_file:
        kwargs["gguf_file"] = model_args.gguf_file
    if model_args.tokenizer_name_or_path:
        return AutoTokenizer.from_pretrained(
            model_args.tokenizer_name_or_path, trust_remote_code=model_args.trust_remote_code
        )
    return AutoTokenizer.from_pretrained(model_args.model_name_or_path, **kwargs)


def load_models(model_args: ModelArguments):
    """``(policy, reference or None)`` through :func:`aihf.llm.loading.load_policy` (GGUF dequantised)."""
    from ..llm.loading import load_policy

    kwargs: dict[str, Any] = {"trust_remote_code": model_args.trust_remote_code, "dtype": model_args.dtype}
    if model_args.gguf_file:
        kwargs["gguf_file"] = model_args.gguf_file
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    model, _ = load_policy(model_args.model_name_or_path, kwargs, load_tokenizer=False)
    ref_path = model_args.ref_model_name_or_path
    if ref_path is None and not model_args.use_peft and _zero3():
        # ZeRO-3 partitions the policy at load time, so the reference is loaded, not copied.
        ref_path = model_args.model_name_or_path
    ref = None
    if ref_path:
        if ref_path != model_args.model_name_or_path:
            kwargs.pop("gguf_file", None)  # the GGUF file names the policy's checkpoint only
        ref, _ = load_policy(ref_path, kwargs, load_tokenizer=False)
    return model, ref


def _zero3() -> bool:
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def _loading(args: TrainArguments, what: str, load):
    """Run ``load``; a path or Hub id that does not hold ``what`` becomes one line."""
    try:
        return load()
    except ConfigError:
        raise
    except (OSError, ValueError) as e:
        name = "tokenizer_name_or_path" if what == "tokenizer" and args.model.tokenizer_name_or_path else None
        name = name or "model_name_or_path"
        raise load_error(args.describe(name), getattr(args.model, name), what, e) from e


def _quiet_when_resuming(args: TrainArguments, load):
    """``load()`` without transformers' weight-loading bar when resuming: the trainer checks that the
    checkpoint belongs to this run (``aihf_run.json``) only once the model is loaded, and a refusal
    must stay one line."""
    from transformers.utils import logging as hf_logging

    if not resume_setting(args.config) or not hf_logging.is_progress_bar_enabled():
        return load()
    hf_logging.disable_progress_bar()
    try:
        return load()
    finally:
        hf_logging.enable_progress_bar()


# ---------------------------------------------------------------------------------- training
def train(argv: list[str]) -> TrainResult:
    """``aihf train``: check everything, load, train, save. Returns the final metrics and where the model went."""
    args = parse_train_args(argv)
    if args.run.method in RL_METHODS:
        check_settings, fit = rl.check_settings, rl.fit
    else:
        check_settings, fit = _check_settings, _train
    with info_after_checks():
        route_dataset_name(args)  # TRL's --dataset_name, as --preferences or --demonstrations
        check_settings(args)
        check_paths(args)
        tokenizer = _loading(args, "tokenizer", lambda: load_tokenizer(args.model))
        sources = read_and_validate(args, tokenizer)
        check_output_dirs(args)
        model, ref = _loading(args, "model", lambda: _quiet_when_resuming(args, lambda: load_models(args.model)))
    with warnings.catch_warnings():
        _silence_noise(args)
        return fit(args, model, ref, tokenizer, sources)


def _check_settings(args: TrainArguments) -> None:
    apply_method(args)
    check_no_resume(args)
    check_sources_given(args)
    warn_ignored(args)


def _silence_noise(args: TrainArguments) -> None:
    """Library warnings that ask nothing of the user of this run (each checked to be harmless here)."""
    # peft reads a property that transformers deprecated, on every LoRA wrap.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    if args.model.gguf_file:
        # peft looks for the base's config.json beside the .gguf, finds none, and assumes an
        # unchanged vocabulary, which holds: aihf never resizes embeddings.
        warnings.filterwarnings("ignore", message="Could not find a config file in")
    if args.run.method in STAGES:
        # The SFT stage reads the pairs only for their gold references, and the DPO stage's adapter
        # is meant to sit on the merged SFT model, not on the original base (the same holds for the
        # RLHF stage of sft_then_rlhf).
        warnings.filterwarnings("ignore", message="pref_weight=0: the training preference pairs are ignored")
        warnings.filterwarnings("ignore", message="The PEFT config's `base_model_name_or_path` was renamed")


def _train(args: TrainArguments, model, ref, tokenizer, sources: Sources) -> TrainResult:
    from ..llm.pipelines import sft_stage_args, sft_then_dpo
    from ..llm.trainer import AIHFTrainer

    config, run = args.config, args.run
    peft_config = lora_config(args.model)
    if run.method == "sft_then_dpo":
        result = sft_then_dpo(
            model,
            config,
            sources.demonstrations,
            sources.preferences,
            tokenizer,
            sft_args=sft_stage_args(config, **sft_overrides(run)),
            peft_config=peft_config,
        )
        metrics = {"sft": result.sft_trainer.state.log_history[-1], "dpo": result.dpo_trainer.state.log_history[-1]}
        final = result.dpo_trainer
    else:
        final = AIHFTrainer(
            model,
            ref_model=ref,
            args=config,
            demonstrations=sources.demonstrations,
            preferences=sources.preferences,
            eval_demonstrations=sources.eval_demonstrations,
            eval_preferences=sources.eval_preferences,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        output = final.train(resume_from_checkpoint=resume_setting(config))
        final.save_model()
        final.save_state()
        metrics = dict(output.metrics)
        if final.eval_dataset is not None:
            metrics.update(final.evaluate())
        final.save_metrics("all", metrics)
    return TrainResult(metrics, final.args.output_dir, final.is_world_process_zero(), peft_config is not None)


def _leave_process_group() -> bool:
    """Tear down torch.distributed after a successful run; True if there was a process group.

    Left to interpreter shutdown, gloo's worker threads can still hold tensors while Python is
    being finalised, and the process dies with SIGABRT ("terminate called without an active
    exception") after all the work is saved. Only on success: destroying the group while
    another rank is stuck in a collective would hang instead of failing.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        return True
    return False


def run(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        build_parser(train_method(argv)).print_help()
        return 0
    # stdout carries the results alone (the metrics, the saved folders), for a pipe; what the run
    # says while it goes (aihf's INFO lines, the Trainer's log dicts, the rounds' log lines) goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        result = train(argv)
    distributed = _leave_process_group()
    if result.is_main_process:
        print(json.dumps(result.metrics, indent=2, default=str))
        kind = "LoRA adapter" if result.is_adapter else "model"
        print(f"aihf train: final {kind} saved to {result.model_dir}")
        if result.reward_model_dir:
            print(f"aihf train: reward model saved to {result.reward_model_dir}")
    if distributed:
        # Even after destroy_process_group, a gloo thread object can outlive the interpreter and
        # abort the process at static destruction (SIGABRT, "terminate called without an active
        # exception") after everything is saved; exiting without finalisation skips that.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
