"""What every ``aihf`` command shares: how settings are shown, argparse's mistakes as one line, help text.

This module sits below :mod:`aihf.cli`, :mod:`aihf.control` and :mod:`aihf.bench` (it imports only
:mod:`aihf.errors`), so that each command words a mistake the same way without importing another
command's module: ``unknown option --max_step (did you mean --max_steps?)``, ``aihf control: unknown
command 'trian': did you mean 'train'? ...``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from enum import Enum
from typing import Any

from .errors import ConfigError


def describe(name: str, value: Any, origins: dict[str, str]) -> str:
    """``--name value`` (a flag), ``name: value in run.yaml`` or ``name=value (the default)``."""
    origin = origins.get(name)
    if origin is None:
        return f"{name}={show(value)} (the default)"
    if origin.startswith("--"):
        return f"{origin} {show(value)}"
    return f"{name}: {show(value)} in {origin}"


def show(value: Any) -> str:
    """A default or setting as the user would write it: strings with newlines come out escaped."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, str):
        return repr(value) if not value or not value.isprintable() or value != value.strip() else value
    return str(value)



def type_name(kind: Any) -> str:
    from transformers.hf_argparser import string_to_bool

    return {int: "an integer", float: "a number", str: "a string", string_to_bool: "true or false"}.get(kind, "a value")



_PATH_FIELDS = {
    "config",
    "output_dir",
    "gguf_file",
    "reward_model",
    "dataset_name",
    *(f"{p}{k}" for p in ("", "eval_") for k in ("demonstrations", "preferences")),
}


class HelpFormatter(argparse.HelpFormatter):
    """One spelling per option, a metavar naming its type, and defaults shown as they are."""

    def _format_action_invocation(self, action):
        if not action.option_strings:
            return super()._format_action_invocation(action)
        # Each field also has a --with-hyphens alias; listing both doubles every line of the help.
        names = [s for s in action.option_strings if not (s.startswith("--") and "-" in s[2:])]
        if action.nargs == 0:
            return ", ".join(names)
        from transformers.hf_argparser import string_to_bool

        metavar = {int: "INT", float: "FLOAT", string_to_bool: "BOOL"}.get(action.type, "TEXT")
        if action.dest in _PATH_FIELDS or action.dest.endswith("_name_or_path"):
            metavar = "PATH"
        elif action.dest == "resume_from_checkpoint":
            metavar = "true|PATH"
        return f"{names[0]} {self._format_args(action, metavar)}"

    def _get_help_string(self, action):
        text = action.help or ""
        if action.nargs == 0 or action.default in (None, argparse.SUPPRESS) or "default" in text.lower():
            return text
        return f"{text} (default: {show(action.default).replace('%', '%%')})"


def argument_parser(dataclass_types, elsewhere: dict[str, str] | None = None, **kwargs):
    """An ``HfArgumentParser`` for an ``aihf`` command: a mistake raises :class:`ConfigError`
    (printed as one line, exit status 2) where argparse would print its usage and exit, and
    abbreviations (``--learning_rat``) are refused, as a YAML file refuses them.

    ``elsewhere`` maps the fields of other commands (or methods) that this one lacks to what to say
    of them (``an option of `aihf eval-reward`, not of `aihf train```), said instead of a "did you
    mean" guess at a look-alike of this command's options."""
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        def error(self, message):
            # "argument --max_steps/--max-steps: invalid int value: 'two'" -> "--max_steps: expected an
            # integer, got 'two'", as the same mistake in the YAML file reads.
            message = re.sub(r"^argument (--[\w]+)(/--[\w-]+)*: ", r"\1: ", one_line_error(message, self))
            bad = re.match(r"^(--\w+): invalid (int|float) value: (.*)$", message)
            if bad:
                message = f"{bad[1]}: expected {type_name(int if bad[2] == 'int' else float)}, got {bad[3]}"
            raise ConfigError(message)

    parser = Parser(dataclass_types, allow_abbrev=False, **kwargs)
    parser.elsewhere = elsewhere or {}
    return parser



def did_you_mean(word: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


# What an interrupted benchmark sweep prints (`aihf bench llm`, `aihf control bench`).
RESUME_SWEEP = "rerun the same command to continue: finished runs are skipped"


def unknown_command(prog: str, command: str, commands: list[str]) -> str:
    """``aihf: unknown command 'trian': did you mean 'train'? commands: train, ...`` (``prog`` is ``aihf``,
    ``aihf control``, ...)."""
    match = difflib.get_close_matches(command, commands, n=1)
    hint = f"did you mean '{match[0]}'? " if match else ""
    return f"{prog}: unknown command '{command}': {hint}commands: {', '.join(commands)}"


def unknown_arguments(remaining: list[str], parser: argparse.ArgumentParser) -> str:
    """The one line for arguments ``parser`` does not take: ``unknown option --max_step (did you mean
    --max_steps?)``, or for a stray value ``unexpected argument '5': options are written --name value``.
    Every ``aihf`` command's parser words it so (its ``error`` for argparse's "unrecognized arguments")."""
    unknown = next((t for t in remaining if t.startswith("-")), None)
    if unknown is None:
        return f"unexpected argument {remaining[0]!r}: options are written --name value"
    name = unknown.split("=", 1)[0]
    belongs = getattr(parser, "elsewhere", {}).get(name[2:].replace("-", "_"))
    if belongs:
        return f"unknown option {name}: {belongs}"
    # Only the --snake_case spelling is suggested (HfArgumentParser also accepts --kebab-case).
    flags = sorted(o for o in parser._option_string_actions if o.startswith("--") and "-" not in o[2:])
    return f"unknown option {name}{did_you_mean(name, flags)}"


def one_line_error(message: str, parser: argparse.ArgumentParser) -> str:
    """argparse's complaint as the line an ``aihf`` command prints (see :func:`unknown_arguments`)."""
    if message.startswith("unrecognized arguments: "):
        return unknown_arguments(message.split(": ", 1)[1].split(), parser)
    return message


def one_line(message: str) -> str:
    """An error message as one line of stderr: its lines joined by a space, and any other control
    character escaped (a file name or value given as "a\\rb" stays visible and on the line)."""
    text = " ".join(part.strip() for part in message.split("\n") if part.strip())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def stdout_closed() -> int:
    """The reader of stdout went away (``aihf ... | head``): end quietly, as Unix tools do, with the
    status a shell gives a command that SIGPIPE ended (128 + 13)."""
    # Python would otherwise report the failed flush of the rest of stdout at exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141
