"""Command-line flags to a control config: every field of :class:`~aihf.control.config.ControlConfig`
(``aihf control train``) and :class:`~aihf.control.config.CollectConfig` (``collect``) is a flag
whose help is the field's; ``--preset`` replaces the defaults first. Used by ``aihf control`` and by
the benchmark, which checks each run's flags before it starts any."""

from __future__ import annotations

import argparse
import dataclasses

from .config import PRESETS, CollectConfig, OneLineParser, with_preset

__all__ = ["parse_config", "parse_flags"]


def _to_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parser_for(cls, prog: str, description: str) -> argparse.ArgumentParser:
    usage = f"{prog} [--preset {'|'.join(PRESETS)}] [--field value ...]"
    parser = OneLineParser(prog=prog, usage=usage, description=description)
    parser.add_argument("--preset", choices=list(PRESETS), default=None, help="Replace the defaults with a preset.")
    for f in dataclasses.fields(cls):
        # Annotations are strings under `from __future__ import annotations`.
        kind = str(f.type)
        conv = (
            _to_bool
            if kind.startswith("bool")
            else int
            if kind.startswith("int")
            else float
            if kind.startswith("float")
            else str
        )
        parser.add_argument(
            f"--{f.name}",
            type=conv,
            default=None,
            choices=f.metadata.get("choices"),
            help=_with_default(f.metadata.get("help", ""), f.default),
        )
    return parser


def _with_default(text: str, default) -> str:
    # A help text that already says its default ("default: all") is not followed by "(default: None)".
    return text if "default" in text.lower() else f"{text} (default: {default})"


def parse_config(cls, argv: list[str], prog: str, description: str):
    """Flags -> ``cls`` (preset defaults first, then the flags that were given)."""
    return parse_flags(cls, argv, prog, description)[0]


def parse_flags(cls, argv: list[str], prog: str, description: str):
    """``(config, names of the fields set by a flag)``; a bad flag or value prints one line and exits 2."""
    args = _parser_for(cls, prog, description).parse_args(argv)
    config = with_preset(cls, args.preset, "collect" if cls is CollectConfig else "train")
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name) is not None}
    return dataclasses.replace(config, **given), set(given)
