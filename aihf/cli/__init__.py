"""Command line: ``aihf train``, ``aihf eval-reward``, ``aihf quickstart``, ``aihf env`` (one module per
command; ``aihf train --method aihf_rl|rlhf|rft|sft_then_rlhf`` and ``aihf eval-reward`` live in :mod:`.rl`,
the start-up checks both train paths share in :mod:`.checks`, the method presets in :mod:`aihf.methods`).

``main`` dispatches to the command's ``run(argv)``. A user error, :class:`aihf.ConfigError` or
:class:`aihf.DataError`, is printed as one line, ``aihf <command>: <message>``, on stderr, and
the exit status is 2. A run that cannot go on, :class:`aihf.TrainingError` (a NaN/inf in a loss term,
gradient or reward; too little disk for its checkpoints), is printed the same way with exit status 3,
its last checkpoint intact. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys

from ..commandline import RESUME_SWEEP, one_line, stdout_closed, unknown_command

COMMANDS = {
    "train": "align a causal LM (see 'aihf train --help'; with a reward model: 'aihf train --method aihf_rl --help')",
    "eval-reward": "pairwise accuracy of a saved reward model on preference pairs (see 'aihf eval-reward --help')",
    "quickstart": "the built-in default task, offline, end to end (see 'aihf quickstart --help')",
    "bench": "benchmarks: 'aihf bench llm --preset quick' compares every LLM method on the sentiment task",
    "control": "MuJoCo control: collect demonstrations and preferences, train, eval, bench (see 'aihf control')",
    "env": "versions of aihf, python, the platform and the libraries it runs on (for bug reports)",
}


# `aihf dpo ...` is `aihf train --method dpo ...`, as TRL's CLI has `trl dpo` / `trl sft`: one alias per
# method (aihf.methods.METHODS + RL_METHODS; `aihf` itself is the default method of `aihf train`).
METHOD_ALIASES = ("dpo", "sft", "spin", "sft_then_dpo", "aihf_rl", "rlhf", "rft", "sft_then_rlhf")
# TRL's trainer names that are one of these methods: `aihf rloo` is `aihf train --method rlhf`, TRL's
# RewardTrainer then RLOOTrainer in one run (the reward model is fitted on the preference pairs, from
# --reward_model_name_or_path if given, frozen, and the policy trained by RLOO against it).
TRL_ALIASES = {"rloo": "rlhf"}


def _usage() -> str:
    lines = ["usage: aihf <command> [options]", "", "commands:"]
    lines += [f"  {name:<12} {text}" for name, text in COMMANDS.items()]
    aliases = ", ".join(METHOD_ALIASES)
    lines += [f"  {'<method>':<12} 'aihf dpo ...' = 'aihf train --method dpo ...'; methods: {aliases}"]
    lines += [
        f"  {name:<12} = 'aihf train --method {method} ...' (TRL's RewardTrainer, then RLOOTrainer)"
        for name, method in TRL_ALIASES.items()
    ]
    lines += ["", "options:", "  -h, --help  show this message", "  --version   print aihf's version"]
    return "\n".join(lines)



def _show_info() -> None:
    """aihf's INFO lines (e.g. which end token closes completions) go to stderr on the main process,
    with the progress bars, so that stdout carries only results (metrics, saved folders) for a pipe."""
    logger = logging.getLogger("aihf")
    if any(isinstance(h, _Stderr) for h in logger.handlers) or int(os.environ.get("RANK", "0")) != 0:
        return
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("aihf: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


class _Stderr(logging.Handler):
    # Looks sys.stderr up at each record, not once: callers (and pytest) may swap it between runs.
    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from .. import __version__

        print(f"aihf {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    shown = command  # errors name the command as typed (`aihf dpo: ...`)
    if command in METHOD_ALIASES or command in TRL_ALIASES:
        if any(a == "--method" or a.startswith("--method=") for a in rest):
            hint = "use 'aihf train --method ...'"
            print(f"aihf {command}: --method is given by the command itself; {hint}", file=sys.stderr)
            return 2
        command, rest = "train", ["--method", TRL_ALIASES.get(command, command), *rest]
    if command not in COMMANDS:
        print(unknown_command("aihf", command, list(COMMANDS)), file=sys.stderr)
        return 2

    from ..errors import ConfigError, DataError, TrainingError

    _show_info()
    try:
        if command == "train":
            from .train import run
        elif command == "eval-reward":
            from .rl import run_eval_reward as run
        elif command == "quickstart":
            from .quickstart import run
        elif command == "bench":
            from .bench import run
        elif command == "control":
            from ..control.cli import main as run
        else:
            from .env import run
        return run(rest)
    except BrokenPipeError:  # `aihf control bench --list | head`
        return stdout_closed()
    except (ConfigError, DataError) as e:
        print(f"aihf {shown}: {one_line(str(e))}", file=sys.stderr)
        return 2
    except TrainingError as e:
        _close_progress_bars()
        print(f"aihf {shown}: {one_line(str(e))}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        if command != "bench":
            raise
        # Ctrl-C or SIGTERM of a sweep: its runs were stopped (aihf.bench.runner); one line, not a traceback.
        print(f"aihf {shown}: interrupted: {RESUME_SWEEP}", file=sys.stderr)
        return 130


def _close_progress_bars() -> None:
    """Close the progress bars a failed run left open, so that its error starts a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


__all__ = ["COMMANDS", "METHOD_ALIASES", "TRL_ALIASES", "main", "stdout_closed"]
