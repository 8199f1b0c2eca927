"""Tokenisation: validated texts -> token ids, with the prompt kept apart so that losses can mask it.

The prompt and each completion are tokenised separately (a completion's tokens never merge
with the prompt's). EOS is appended to plain-text completions; a chat template already closes
the turn, and what it writes after the turn's EOS is dropped. The prompt is truncated from the
left to ``max_prompt_length`` (a leading BOS is kept) and completions from the right so that
prompt + completion fits in ``max_length``.
"""

from __future__ import annotations

from typing import Any

import datasets

from ..errors import DataError
from .formats import HH_ASSISTANT_MARKER, demonstration_texts, preference_texts
from .sources import Rows, read_rows


def check_lengths(max_length: int | None, max_prompt_length: int | None) -> None:
    for name, value in (("max_length", max_length), ("max_prompt_length", max_prompt_length)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1 or None, got {value}")
    if max_length is not None and max_prompt_length is not None and max_prompt_length >= max_length:
        raise ValueError(
            f"max_prompt_length ({max_prompt_length}) must be smaller than max_length ({max_length}), "
            "or no completion token would fit"
        )


def prepare_demonstrations(
    source: Any,
    tokenizer: Any,
    *,
    max_length: int | None = 1024,
    max_prompt_length: int | None = 512,
    split: str = "train",
    name: str | None = None,
) -> datasets.Dataset:
    """Read, validate and tokenise demonstrations.

    Returns a ``datasets.Dataset`` with columns ``prompt_ids``, ``completion_ids`` and ``row``
    (where the example came from). Raises :class:`aihf.DataError` on the first bad row.
    """
    check_lengths(max_length, max_prompt_length)
    rows = read_rows(source, split=split, name=name)
    texts = demonstration_texts(rows, tokenizer)
    prompts = _encode(tokenizer, [t.prompt for t in texts], [t.conversational for t in texts], special=True)
    completions = _encode(tokenizer, [t.completion for t in texts], [t.conversational for t in texts], special=False)
    columns: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "row": []}
    for i, text in enumerate(texts):
        where = rows.label(i)
        prompt = _fit_prompt(rows, where, tokenizer, prompts[i], max_length, max_prompt_length)
        completion = _fit_completion(tokenizer, completions[i], text.conversational, len(prompt), max_length)
        columns["prompt_ids"].append(prompt)
        columns["completion_ids"].append(completion)
        columns["row"].append(f"{rows.source}, {where}")
    return datasets.Dataset.from_dict(columns)


def prepare_preferences(
    source: Any,
    tokenizer: Any,
    *,
    max_length: int | None = 1024,
    max_prompt_length: int | None = 512,
    implicit_prompt_marker: str | None = HH_ASSISTANT_MARKER,
    split: str = "train",
    name: str | None = None,
) -> datasets.Dataset:
    """Read, validate and tokenise preference pairs.

    Returns a ``datasets.Dataset`` with columns ``prompt_ids``, ``chosen_ids``, ``rejected_ids``,
    ``reference_ids`` (empty where a row has no gold reference) and ``row``.
    """
    check_lengths(max_length, max_prompt_length)
    rows = read_rows(source, split=split, name=name)
    texts = preference_texts(rows, tokenizer, implicit_prompt_marker)
    conv = [t.conversational for t in texts]
    prompts = _encode(tokenizer, [t.prompt for t in texts], conv, special=True)
    encoded = {
        field: _encode(tokenizer, [getattr(t, field) or "" for t in texts], conv, special=False)
        for field in ("chosen", "rejected", "reference")
    }
    columns: dict[str, list] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": [], "reference_ids": [], "row": []}
    for i, text in enumerate(texts):
        where = rows.label(i)
        prompt = _fit_prompt(rows, where, tokenizer, prompts[i], max_length, max_prompt_length)
        columns["prompt_ids"].append(prompt)
        for field in ("chosen", "rejected", "reference"):
            ids = encoded[field][i]
            if field == "reference" and text.reference is None:
                columns["reference_ids"].append([])
                continue
            columns[f"{field}_ids"].append(
                _fit_completion(tokenizer, ids, text.conversational, len(prompt), max_length)
            )
        columns["row"].append(f"{rows.source}, {where}")
    return datasets.Dataset.from_dict(columns)


def references_as_demonstrations(preferences: datasets.Dataset) -> datasets.Dataset | None:
    """The gold references of a prepared preference dataset, as a prepared demonstration dataset."""
    keep = [i for i, ref in enumerate(preferences["reference_ids"]) if ref]
    if not keep:
        return None
    subset = preferences.select(keep)
    return datasets.Dataset.from_dict(
        {
            k: list(subset[c])
            for k, c in (("prompt_ids", "prompt_ids"), ("completion_ids", "reference_ids"), ("row", "row"))
        }
    )


def _encode(tokenizer: Any, texts: list[str], conversational: list[bool], *, special: bool) -> list[list[int]]:
    """Batch-tokenise. A rendered chat template already holds its special tokens (BOS...)."""
    out: list[list[int]] = [[] for _ in texts]
    for conv in (False, True):
        idx = [i for i, c in enumerate(conversational) if c == conv]
        if not idx:
            continue
        ids = tokenizer([texts[i] for i in idx], add_special_tokens=special and not conv)["input_ids"]
        for i, seq in zip(idx, ids):
            out[i] = list(seq)
    return out


def _fit_prompt(
    rows: Rows, where: str, tokenizer: Any, prompt: list[int], max_length: int | None, max_prompt_length: int | None
) -> list[int]:
    if not prompt:
        if tokenizer.bos_token_id is None:
            raise DataError(
                rows.source, where, "prompt", "empty, and the tokenizer has no BOS token to condition the answer on"
            )
        prompt = [tokenizer.bos_token_id]
    if max_prompt_length is not None and len(prompt) > max_prompt_length:
        bos = tokenizer.bos_token_id
        if bos is not None and prompt[0] == bos and max_prompt_length > 1:
            prompt = [bos] + prompt[len(prompt) - max_prompt_length + 1 :]
        else:
            prompt = prompt[len(prompt) - max_prompt_length :]
    if max_length is not None and len(prompt) >= max_length:
        raise DataError(
            rows.source,
            where,
            "prompt",
            f"{len(prompt)} tokens leave no room for the completion within max_length={max_length}; "
            "set max_prompt_length below max_length to truncate long prompts",
        )
    return prompt


def _fit_completion(
    tokenizer: Any, ids: list[int], conversational: bool, prompt_len: int, max_length: int | None
) -> list[int]:
    eos = tokenizer.eos_token_id
    if conversational and eos is not None and eos in ids:
        # Drop what a chat template writes after the answer's EOS (often a newline): a sampled
        # answer stops at EOS, and self-play must not tell the two apart by that tail.
        ids = ids[: len(ids) - ids[::-1].index(eos)]
    elif not conversational and eos is not None and (not ids or ids[-1] != eos):
        ids = ids + [eos]
    if max_length is not None:
        ids = ids[: max_length - prompt_len]
    return ids
