"""``aihf train``: align a causal LM with demonstrations and preferences from the command line.

Whatever a user can get wrong is checked before the model is loaded, in this order: the settings
(:mod:`aihf.cli.args`: YAML keys and values, flags; here: contradictions with ``--method``), the
model and tokenizer paths, then every data row, read, validated and tokenised with the run's
tokenizer. A mistake raises :class:`aihf.ConfigError` or :class:`aihf.DataError`, which ``aihf``
prints as one line before exiting with status 2; nothing has been written by then.

The methods with an explicit reward model (``--method aihf_rl|rlhf|rft|sft_then_rlhf``) go through
the same checks and loading, with their own settings checks and trainer (:mod:`aihf.cli.rl`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .args import (
    METHOD_SETTINGS,
    RL_METHODS,
    ModelArguments,
    RunArguments,
    TrainArguments,
    build_parser,
    ignored_options,
    parse_train_args,
    show,
    train_method,
)

_WHY = {
    "dpo": "DPO has no demonstration term",
    "sft": "SFT is the NLL of demonstrations alone (--method spin is its self-play counterpart)",
    "spin": "SPIN is self-play on demonstrations alone (--method sft is its NLL counterpart)",
    "sft_then_dpo": "its SFT stage trains demonstrations by NLL with weight 1, its DPO stage with weight 0",
    "rlhf": "RLHF fits the reward model on the preferences alone and then freezes it",
    "rft": "RFT (ML-IRL) learns the reward from the demonstrations alone",
    "sft_then_rlhf": "its SFT stage trains demonstrations with weight 1, its RLHF stage with weight 0",
}
# The stage folders of the two-stage baselines under output_dir.
STAGES = {"sft_then_dpo": ("sft", "dpo"), "sft_then_rlhf": ("sft", "rlhf")}


@dataclass
class TrainResult:
    metrics: dict
    model_dir: str
    is_main_process: bool
    is_adapter: bool
    reward_model_dir: str | None = None  # the RL methods' standalone reward model


# --------------------------------------------------------------------------------- checks
def apply_method(args: TrainArguments):
    """Set the settings that make ``args.run.method`` out of AIHF (or AIHF-RL); refuse contradictions."""
    method, config = args.run.method, args.config
    if method in RL_METHODS:
        free = "--method aihf_rl, which takes demo_weight and pref_weight as given"
    else:
        free = "--method aihf, which takes demo_weight, pref_weight and demo_loss as given"
    for name, implied in METHOD_SETTINGS[method].items():
        given = getattr(config, name)
        if given == implied:
            continue
        if args.level(name) >= args.level("method"):
            raise ConfigError(
                f"{args.describe('method')} contradicts {args.describe(name)}: {_WHY[method]}. Remove one of them, "
                f"or use {free}"
            )
        # A --method flag over a value from the YAML: flags win, as everywhere else, but not silently.
        if args.level(name) == 1:
            warn(
                f"{args.describe('method')} sets {name}={show(implied)} ({_WHY[method]}), so "
                f"{args.describe(name)} is not used"
            )
        setattr(config, name, implied)
        args.origins.pop(name, None)
    if config.demo_weight == 0 and config.pref_weight == 0:
        raise ConfigError(
            f"demo_weight and pref_weight are both 0 ({args.describe('demo_weight')}; "
            f"{args.describe('pref_weight')}): nothing to learn from"
        )
    if method in STAGES and config.pref_weight == 0:
        stage = STAGES[method][1].upper()
        raise ConfigError(
            f"--method {method} needs pref_weight > 0 for its {stage} stage ({args.describe('pref_weight')})"
        )
    return config


# The warnings of the start-up checks, held until every check passed (see _info_after_checks).
_held_warnings: list[str] | None = None


def warn(message: str) -> None:
    """One ``aihf train: warning: ...`` line on stderr: a setting the run goes on without."""
    line = f"aihf train: warning: {message}"
    if _held_warnings is not None:
        _held_warnings.append(line)
    else:
        print(line, file=sys.stderr, flush=True)


def warn_ignored(args: TrainArguments) -> None:
    """One warning per flag that ``--method`` does not use (:data:`aihf.cli.args.METHOD_IGNORES`).
    Keys of the YAML file pass quietly: one file serves several methods."""
    method = args.run.method
    for name in ignored_options(method, args.config.demo_loss):
        if args.level(name) == 2 and args.value(name) is not None:  # `--demonstrations ""` unsets, quietly
            warn(f"{args.describe(name)} is not used by --method {method}")


def _looks_local(path: str) -> bool:
    """A Hub id is ``name`` or ``owner/name`` (letters, digits, ``-_.``); anything else not on disk
    (``./m``, ``~/m``, ``/m``, ``a/b/c``, ``m/``, ``a\\b``) is a missing local path."""
    return path.startswith((".", "~")) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", path)


def _check_model_path(args: TrainArguments, name: str, gguf_file: str | None = None) -> None:
    path = getattr(args.model, name)
    if path is None:
        return
    where = args.describe(name)
    local = os.path.expanduser(path)
    if os.path.isfile(local):
        raise ConfigError(f"{where}: is a file, not a model folder or Hub id")
    if os.path.isdir(local):
        if gguf_file is not None:
            if not os.path.isfile(os.path.join(local, gguf_file)):
                raise ConfigError(f"{args.describe('gguf_file')}: no such file in {path}")
        elif name != "tokenizer_name_or_path" and not os.path.exists(os.path.join(local, "config.json")):
            ggufs = sorted(f for f in os.listdir(local) if f.endswith(".gguf"))
            hint = f"; it holds {ggufs[0]}: add --gguf_file {ggufs[0]}" if ggufs else ""
            raise ConfigError(f"{where}: not a model folder (no config.json){hint}")
        return
    if _looks_local(path):
        raise ConfigError(f"{where}: no such folder")


def _check_paths(args: TrainArguments) -> None:
    """Model, tokenizer, reference and checkpoint paths, before anything is loaded."""
    m = args.model
    _check_model_path(args, "model_name_or_path", m.gguf_file)
    _check_model_path(args, "tokenizer_name_or_path")
    ref_gguf = m.gguf_file if m.ref_model_name_or_path == m.model_name_or_path else None
    _check_model_path(args, "ref_model_name_or_path", ref_gguf)
    resume = _resume(args.config)
    if isinstance(resume, str) and not os.path.isdir(resume):
        raise ConfigError(
            f"{args.describe('resume_from_checkpoint')}: no such checkpoint folder "
            "(true continues the last checkpoint in output_dir)"
        )
    if resume is True:
        from transformers.trainer_utils import get_last_checkpoint

        out = args.config.output_dir
        if not os.path.isdir(out) or get_last_checkpoint(out) is None:
            raise ConfigError(f"{args.describe('resume_from_checkpoint')}, but {out} holds no checkpoint-* folder")


def _resume(config) -> bool | str | None:
    resume = config.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        resume = resume.lower() == "true"
    return resume or None


def _check_sources_given(args: TrainArguments) -> None:
    """The sources the weights need, before reading any (references are checked after)."""
    data, config, method = args.data, args.config, args.run.method
    if method == "sft_then_dpo":
        given = [n for n in ("eval_demonstrations", "eval_preferences") if getattr(data, n)]
        if args.model.ref_model_name_or_path:
            given.append("ref_model_name_or_path")
        if given:
            raise ConfigError(f"--method sft_then_dpo does not support {', '.join(given)} yet")
    if config.pref_weight > 0 and not data.preferences:
        hint = "" if method in ("dpo", "sft_then_dpo") else ", or use --method sft or spin to train without them"
        raise ConfigError(
            f"no preferences given, and {args.describe('method')} with pref_weight={show(config.pref_weight)} "
            f"needs them: set preferences (prompt/chosen/rejected rows){hint}"
        )
    if config.demo_weight > 0 and not data.demonstrations and not data.preferences:
        raise ConfigError(_no_demonstrations(args))


def _no_demonstrations(args: TrainArguments) -> str:
    config = args.config
    if config.demo_loss == "self_play":
        setting = args.describe("demo_loss" if args.level("demo_loss") else "method")
        what = f"self-play ({setting}) contrasts demonstrations with the policy's samples"
    else:
        what = f"{args.describe('method')} with demo_weight={show(config.demo_weight)} trains on demonstrations"
    return (
        f"no demonstrations given, and {what}: set demonstrations (prompt/completion or messages rows), "
        "or give preference rows a 'reference'"
    )


@dataclass
class Sources:
    """What the trainer gets: read and validated rows, or None where the run does not use a source."""

    demonstrations: Any = None
    preferences: Any = None
    eval_demonstrations: Any = None
    eval_preferences: Any = None


def read_and_validate(args: TrainArguments, tokenizer) -> Sources:
    """Read every row the run uses and validate it as the trainer will: format and tokenisation.

    A source the method does not use (demonstrations under DPO; preference pairs without gold
    references under SFT/SPIN) is not passed on, so the trainer has nothing to warn about.
    Raises :class:`aihf.DataError` naming file, row and field.
    """
    from ..data import prepare_demonstrations, prepare_preferences, read_rows

    data, config = args.data, args.config
    kw = dict(max_length=config.max_length, max_prompt_length=config.max_prompt_length, eos_token=config.eos_token)
    uses_demos = config.demo_weight > 0  # sft_then_dpo's SFT stage: apply_method set it to 1
    # AIHF-RL also reads the pairs to fit its reward model before the first round.
    uses_prefs = config.pref_weight > 0 or getattr(config, "reward_pretrain_steps", 0) > 0

    def preferences(source, split):
        if source is None:
            return None, False
        rows = read_rows(source, split=split)
        prepared = prepare_preferences(rows, tokenizer, implicit_prompt_marker=config.implicit_prompt_marker, **kw)
        has_references = any(len(ids) for ids in prepared["reference_ids"])
        lends = uses_demos and config.use_references_as_demonstrations and has_references
        return (rows if uses_prefs or lends else None), lends

    def demonstrations(source, split):
        if source is None or not uses_demos:
            return None
        rows = read_rows(source, split=split)
        prepare_demonstrations(rows, tokenizer, **kw)
        return rows

    prefs, references = preferences(data.preferences, data.preferences_split)
    sources = Sources(
        demonstrations=demonstrations(data.demonstrations, data.demonstrations_split),
        preferences=prefs,
        eval_demonstrations=demonstrations(data.eval_demonstrations, data.eval_split),
        eval_preferences=preferences(data.eval_preferences, data.eval_split)[0],
    )
    if uses_demos and sources.demonstrations is None and not references:
        raise ConfigError(_no_demonstrations(args))
    return sources


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


def lora_config(model_args: ModelArguments, task_type: str = "CAUSAL_LM", enabled: bool | None = None):
    """LoRA of the ``lora_*`` settings for ``task_type``, or None unless ``enabled`` (default: ``use_peft``)."""
    if not (model_args.use_peft if enabled is None else enabled):
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules or "all-linear",
        task_type=task_type,
    )


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


def load_error(where: str, path: str, what: str, e: Exception) -> ConfigError:
    """One line for a failed load of ``what`` from ``path`` (a folder or Hub id), set as ``where``."""
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
    if not os.path.exists(os.path.expanduser(path)):
        # `models/my-model` may be a folder the user mistyped as well as a Hub id: say both.
        first = f"no such local folder, and as a Hub id: {first}"
    return ConfigError(f"{where}: cannot load the {what}: {first}")


def _quiet_when_resuming(args: TrainArguments, load):
    """``load()`` without transformers' weight-loading bar when resuming: the trainer checks that the
    checkpoint belongs to this run (``aihf_run.json``) only once the model is loaded, and a refusal
    must stay one line."""
    from transformers.utils import logging as hf_logging

    if not _resume(args.config) or not hf_logging.is_progress_bar_enabled():
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
        from . import rl

        check_settings, fit = rl.check_settings, rl.fit
    else:
        check_settings, fit = _check_settings, _train
    with _info_after_checks():
        check_settings(args)
        _check_paths(args)
        tokenizer = _loading(args, "tokenizer", lambda: load_tokenizer(args.model))
        sources = read_and_validate(args, tokenizer)
        _check_output_dirs(args)
        model, ref = _loading(args, "model", lambda: _quiet_when_resuming(args, lambda: load_models(args.model)))
    with warnings.catch_warnings():
        _silence_noise(args)
        return fit(args, model, ref, tokenizer, sources)


@contextlib.contextmanager
def _info_after_checks():
    """Hold aihf's INFO lines (which end token closes completions...) and the checks' warnings
    (:func:`warn`) while the start-up checks run, and show them only once every check passed: a
    refused run prints its one error line, nothing else. Library warnings pass at once."""
    global _held_warnings
    _held_warnings = warnings_held = []
    held: list[tuple[logging.Handler, logging.LogRecord]] = []
    handlers, logger = [], logging.getLogger("aihf")
    while logger is not None:  # the handlers an aihf record reaches: aihf's own, then its parents'
        handlers += logger.handlers
        logger = logger.parent if logger.propagate else None

    def holder(handler):
        def hold(record: logging.LogRecord) -> bool:
            if record.name.split(".")[0] == "aihf" and record.levelno < logging.WARNING:
                held.append((handler, record))
                return False
            return True

        return hold

    filters = [(h, holder(h)) for h in handlers]
    for handler, hold in filters:
        handler.addFilter(hold)
    try:
        yield
    finally:
        for handler, hold in filters:
            handler.removeFilter(hold)
        _held_warnings = None
    # Reached only when the checks passed (an exception skips it and the held lines are dropped).
    for line in warnings_held:
        print(line, file=sys.stderr, flush=True)
    for handler, record in held:
        handler.handle(record)


def _check_settings(args: TrainArguments) -> None:
    apply_method(args)
    check_no_resume(args)
    _check_sources_given(args)
    warn_ignored(args)


def check_no_resume(args: TrainArguments) -> None:
    """The two-stage methods cannot resume: each stage is a run of its own, in a subfolder."""
    method = args.run.method
    if method not in STAGES or not _resume(args.config):
        return
    second = STAGES[method][1]
    raise ConfigError(
        f"--method {method} cannot resume ({args.describe('resume_from_checkpoint')}): start it again with "
        f"--overwrite_output_dir true, or run its stages as two commands, each of which resumes: --method sft, "
        f"then --method {second} with --model_name_or_path the SFT model (docs/runs-and-outputs.md)"
    )


def _check_output_dirs(args: TrainArguments) -> None:
    """The trainer refuses a used output_dir too, but only after the model is loaded: check first."""
    from ..llm.runs import check_output_dir

    config = args.config
    if _resume(config):
        return
    out = config.output_dir
    stages = STAGES.get(args.run.method)
    for folder in [os.path.join(out, stage) for stage in stages] if stages else [out]:
        check_output_dir(folder, config.overwrite_output_dir)


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
        output = final.train(resume_from_checkpoint=_resume(config))
        final.save_model()
        final.save_state()
        metrics = dict(output.metrics)
        if final.eval_dataset is not None:
            metrics.update(final.evaluate())
        final.save_metrics("all", metrics)
    return TrainResult(metrics, final.args.output_dir, final.is_world_process_zero(), peft_config is not None)


def sft_overrides(run: RunArguments) -> dict[str, Any]:
    """The SFT stage's settings that ``sft_*`` options set, by their names in the stage's config."""
    given = (
        ("num_train_epochs", run.sft_num_train_epochs),
        ("max_steps", run.sft_max_steps),
        ("learning_rate", run.sft_learning_rate),
    )
    return {name: value for name, value in given if value is not None}


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
