"""The sources a weighted objective trains on: preferences and demonstrations prepared under the
weights ``pref_weight`` / ``demo_weight`` of a config, gold references lent as demonstrations."""

from __future__ import annotations

import warnings
from typing import Any

import datasets

from ..errors import ConfigError
from .tokenize import prepare_demonstrations, prepare_preferences, references_as_demonstrations


def prepare_weighted_sources(
    args: Any, tokenizer: Any, preferences: Any, demonstrations: Any, purpose: str, required: bool = True
) -> tuple[datasets.Dataset | None, datasets.Dataset | None]:
    """Prepared (preferences, demonstrations) for ``purpose`` ("training", "evaluation", ...) under the
    weights and data settings of ``args`` (an :class:`aihf.llm.AIHFConfig`). A source whose weight is 0
    is dropped (with a warning), except that preference rows still lend their gold references as
    demonstrations. ``required``: a weighted source that is missing raises :class:`aihf.ConfigError`;
    bad rows raise :class:`aihf.DataError`, naming a file by its path and an in-memory dataset by
    ``purpose`` and kind (``training preferences, row 3, field 'chosen'``)."""
    kw = dict(max_length=args.max_length, max_prompt_length=args.max_prompt_length, eos_token=args.eos_token)
    kw["truncation_mode"] = args.truncation_mode
    prefs = demos = refs = None
    if preferences is not None:
        prefs = prepare_preferences(
            preferences, tokenizer, implicit_prompt_marker=args.implicit_prompt_marker,
            name=f"{purpose} preferences", **kw
        )
    elif args.pref_weight > 0 and required:
        raise ConfigError(f"pref_weight={args.pref_weight} but no {purpose} preferences were given")
    if args.demo_weight > 0:
        if demonstrations is not None:
            demos = prepare_demonstrations(demonstrations, tokenizer, name=f"{purpose} demonstrations", **kw)
        if prefs is not None and args.use_references_as_demonstrations:
            refs = references_as_demonstrations(prefs)
        if refs is not None:
            demos = refs if demos is None else datasets.concatenate_datasets([demos, refs])
        if demos is None and required:
            raise ConfigError(
                f"demo_weight={args.demo_weight} but no {purpose} demonstrations were given "
                "(nor preference rows with a 'reference')"
            )
    elif demonstrations is not None:
        warnings.warn(f"demo_weight=0: the {purpose} demonstrations are ignored", stacklevel=3)
    if args.pref_weight == 0 and prefs is not None:
        if refs is None:
            warnings.warn(f"pref_weight=0: the {purpose} preference pairs are ignored", stacklevel=3)
        prefs = None
    return prefs, demos
