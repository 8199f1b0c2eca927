"""The start-up checks every ``aihf train`` method goes through, and what they hand on.

Whatever a user can get wrong is checked before the model is loaded, in this order: the settings
(:mod:`aihf.cli.args` parses them, :func:`apply_method` applies the ``--method`` preset of
:mod:`aihf.methods`), the model and tokenizer paths, then every data row, read, validated and
tokenised with the run's tokenizer (:func:`read_and_validate`), then the output folder. A mistake
raises :class:`aihf.ConfigError` or :class:`aihf.DataError`, which ``aihf`` prints as one line
before exiting with status 2; nothing has been written by then. :mod:`aihf.cli.train` (the implicit
methods) and :mod:`aihf.cli.rl` (the explicit-reward ones) both build on this module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

from .. import methods
from ..commandline import show
from ..errors import ConfigError
from ..methods import STAGES
from .args import ModelArguments, RunArguments, TrainArguments


@dataclass
class TrainResult:
    metrics: dict
    model_dir: str
    is_main_process: bool
    is_adapter: bool
    reward_model_dir: str | None = None  # the RL methods' standalone reward model


# --------------------------------------------------------------------------------- checks
def apply_method(args: TrainArguments):
    """Set what ``args.run.method`` fixes (:func:`aihf.methods.apply_method`), refusing contradictions
    in one line that names the flag or YAML line of each; a setting it overrides is no longer the user's."""
    trained = getattr(args.model, "reward_model_name_or_path", None) is not None
    methods.apply_method(args.run.method, args.config, args, warn, trained_reward_model=trained)
    return args.config


# The warnings of the start-up checks, held until every check passed (see info_after_checks).
_held_warnings: list[str] | None = None


def warn(message: str) -> None:
    """One ``aihf train: warning: ...`` line on stderr: a setting the run goes on without."""
    line = f"aihf train: warning: {message}"
    if _held_warnings is not None:
        _held_warnings.append(line)
    else:
        print(line, file=sys.stderr, flush=True)


def warn_ignored(args: TrainArguments) -> None:
    """One warning per flag that ``--method`` does not use (:data:`aihf.methods.METHOD_IGNORES`).
    Keys of the YAML file pass quietly: one file serves several methods."""
    for name in methods.ignored_settings(args.run.method, args.config, args):  # `--demonstrations ""` unsets
        warn(f"{args.describe(name)} is not used by --method {args.run.method}")


def looks_local(path: str) -> bool:
    """A Hub id is ``name`` or ``owner/name`` (letters, digits, ``-_.``); anything else not on disk
    (``./m``, ``~/m``, ``/m``, ``a/b/c``, ``m/``, ``a\\b``) is a missing local path."""
    return path.startswith((".", "~")) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", path)


def check_model_path(args: TrainArguments, name: str, gguf_file: str | None = None) -> None:
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
    if looks_local(path):
        raise ConfigError(f"{where}: no such folder")


def check_paths(args: TrainArguments) -> None:
    """Model, tokenizer, reference and checkpoint paths, before anything is loaded."""
    m = args.model
    check_model_path(args, "model_name_or_path", m.gguf_file)
    check_model_path(args, "tokenizer_name_or_path")
    ref_gguf = m.gguf_file if m.ref_model_name_or_path == m.model_name_or_path else None
    check_model_path(args, "ref_model_name_or_path", ref_gguf)
    resume = resume_setting(args.config)
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


def resume_setting(config) -> bool | str | None:
    resume = config.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        resume = resume.lower() == "true"
    return resume or None


def check_sources_given(args: TrainArguments) -> None:
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
        raise ConfigError(no_demonstrations(args))


def no_demonstrations(args: TrainArguments) -> str:
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
    prompts: Any = None  # prompt-only rows (aihf.data.Rows), RL methods only


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
        raise ConfigError(no_demonstrations(args))
    if getattr(data, "prompts", None) and "prompts" not in methods.ignored_options(args.run.method, config.demo_loss):
        from ..llm.rl_data import prompt_only_ids

        sources.prompts = read_rows(data.prompts, split=data.prompts_split)
        prompt_only_ids(sources.prompts, tokenizer, config)
    return sources


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


def load_error(where: str, path: str, what: str, e: Exception) -> ConfigError:
    """One line for a failed load of ``what`` from ``path`` (a folder or Hub id), set as ``where``."""
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
    if not os.path.exists(os.path.expanduser(path)):
        # `models/my-model` may be a folder the user mistyped as well as a Hub id: say both.
        first = f"no such local folder, and as a Hub id: {first}"
    return ConfigError(f"{where}: cannot load the {what}: {first}")


@contextlib.contextmanager
def info_after_checks():
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


def check_no_resume(args: TrainArguments) -> None:
    """The two-stage methods cannot resume: each stage is a run of its own, in a subfolder."""
    method = args.run.method
    if method not in STAGES or not resume_setting(args.config):
        return
    second = STAGES[method][1]
    raise ConfigError(
        f"--method {method} cannot resume ({args.describe('resume_from_checkpoint')}): start it again with "
        f"--overwrite_output_dir true, or run its stages as two commands, each of which resumes: --method sft, "
        f"then --method {second} with --model_name_or_path the SFT model (docs/runs-and-outputs.md)"
    )


def check_output_dirs(args: TrainArguments) -> None:
    """The trainer refuses a used output_dir too, but only after the model is loaded: check first."""
    from ..llm.runs import check_output_dir

    config = args.config
    if resume_setting(config):
        return
    out = config.output_dir
    stages = STAGES.get(args.run.method)
    for folder in [os.path.join(out, stage) for stage in stages] if stages else [out]:
        check_output_dir(folder, config.overwrite_output_dir)


def sft_overrides(run: RunArguments) -> dict[str, Any]:
    """The SFT stage's settings that ``sft_*`` options set, by their names in the stage's config."""
    given = (
        ("num_train_epochs", run.sft_num_train_epochs),
        ("max_steps", run.sft_max_steps),
        ("learning_rate", run.sft_learning_rate),
    )
    return {name: value for name, value in given if value is not None}
