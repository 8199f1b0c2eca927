"""Tokenisation: validated texts -> token ids, with the prompt kept apart so that losses can mask it.

Each example is tokenised as one text, prompt + completion, exactly as a model reads it at
inference; the prompt's ids are those of the prompt tokenised alone, and the completion's are
the rest. Where the two disagree because a token straddles the boundary (a prompt ending in a
space before a word, SentencePiece's word-start marker, ``":"`` merged with the symbol after
it), the prompt ends at the last token the two encodings share and the completion starts with
the straddling token: the sequence still equals the whole text's ids (the documented minimal
deviation: the prompt lacks its last token or two; TRL's ``DPOTrainer`` makes the same cut).
A warning counts such rows.

Special tokens (:mod:`aihf.data.special_tokens`): every prompt starts with the BOS the tokenizer
adds, once (a text or chat template that already starts with it gets none added), and never
gets the EOS some tokenizers append to every encoding; other special tokens are those the
text or the template holds. Every completion ends with exactly one
end token, unless ``max_length`` cuts it: text after its last end token is dropped when a chat
template wrote it or it is only whitespace (``"...<|im_end|>\n"``; a sampled answer stops at the
end token, and self-play must not tell the two apart by that tail), and the end token is
appended otherwise.

The prompt is truncated from the left to ``max_prompt_length`` (a leading BOS is kept) and
completions from the right so that prompt + completion fits in ``max_length``. A cut completion
has no end token, as in TRL (its ``DataCollatorForPreference`` cuts prompt + completion, end
token included, to ``max_length``): it is an unfinished answer, and it stays one; this includes
a completion that fits except for its end token. One warning gives the number of truncated rows
and of completions that lost their end token.
"""

from __future__ import annotations

import warnings
from typing import Any

import datasets

from ..errors import DataError
from .formats import HH_ASSISTANT_MARKER, demonstration_texts, preference_texts
from .sources import Rows, read_rows
from .special_tokens import EndToken, end_token, leading_special_ids


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
    eos_token: str | None = None,
    split: str = "train",
    name: str | None = None,
    truncation_mode: str | None = None,
) -> datasets.Dataset:
    """Read, validate and tokenise demonstrations.

    ``eos_token`` overrides the end token (default: detected, see :func:`end_token`).
    ``truncation_mode="keep_end"`` (TRL's) cuts the prompt on the left so that prompt + completion
    fits ``max_length`` whole (see :func:`prompt_limit`).
    Returns a ``datasets.Dataset`` with columns ``prompt_ids``, ``completion_ids`` and ``row``
    (where the example came from). Raises :class:`aihf.DataError` on the first bad row.
    """
    check_lengths(max_length, max_prompt_length)
    rows = read_rows(source, split=split, name=name)
    texts = demonstration_texts(rows, tokenizer)
    encoder = _Encoder(tokenizer, end_token(tokenizer, eos_token), rows)
    prompts, completions = encoder(
        [t.prompt for t in texts], [[t.completion] for t in texts], [t.conversational for t in texts]
    )
    columns: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "row": []}
    for i in range(len(texts)):
        where = rows.label(i)
        limit = prompt_limit(max_length, max_prompt_length, completions[i], truncation_mode)
        prompt = _fit_prompt(rows, where, tokenizer, prompts[i], max_length, limit)
        completion = _fit_completion(completions[i][0], len(prompt), max_length)
        encoder.count_truncation(len(prompt) < len(prompts[i]), completions[i], [completion])
        columns["prompt_ids"].append(prompt)
        columns["completion_ids"].append(completion)
        columns["row"].append(f"{rows.source}, {where}")
    encoder.warn(max_length, max_prompt_length)
    return datasets.Dataset.from_dict(columns)


def prepare_preferences(
    source: Any,
    tokenizer: Any,
    *,
    max_length: int | None = 1024,
    max_prompt_length: int | None = 512,
    implicit_prompt_marker: str | None = HH_ASSISTANT_MARKER,
    eos_token: str | None = None,
    split: str = "train",
    name: str | None = None,
    truncation_mode: str | None = None,
) -> datasets.Dataset:
    """Read, validate and tokenise preference pairs.

    Returns a ``datasets.Dataset`` with columns ``prompt_ids``, ``chosen_ids``, ``rejected_ids``,
    ``reference_ids`` (empty where a row has no gold reference) and ``row``. The prompt is
    shared: where a token straddles the boundary, it ends before the first token on which any
    answer's encoding departs from the prompt's. ``truncation_mode``: see :func:`prompt_limit` (the
    longest answer of a row sets how much of its shared prompt is kept).
    """
    check_lengths(max_length, max_prompt_length)
    rows = read_rows(source, split=split, name=name)
    texts = preference_texts(rows, tokenizer, implicit_prompt_marker)
    answers = [[t.chosen, t.rejected] + ([t.reference] if t.reference is not None else []) for t in texts]
    encoder = _Encoder(tokenizer, end_token(tokenizer, eos_token), rows)
    prompts, completions = encoder([t.prompt for t in texts], answers, [t.conversational for t in texts])
    columns: dict[str, list] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": [], "reference_ids": [], "row": []}
    for i in range(len(texts)):
        where = rows.label(i)
        limit = prompt_limit(max_length, max_prompt_length, completions[i], truncation_mode)
        prompt = _fit_prompt(rows, where, tokenizer, prompts[i], max_length, limit)
        fitted = [_fit_completion(ids, len(prompt), max_length) for ids in completions[i]]
        encoder.count_truncation(len(prompt) < len(prompts[i]), completions[i], fitted)
        columns["prompt_ids"].append(prompt)
        columns["chosen_ids"].append(fitted[0])
        columns["rejected_ids"].append(fitted[1])
        columns["reference_ids"].append(fitted[2] if len(fitted) > 2 else [])
        columns["row"].append(f"{rows.source}, {where}")
    encoder.warn(max_length, max_prompt_length)
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


class _Encoder:
    """Tokenises (prompt, answers) examples of one source and counts what had to be adjusted."""

    def __init__(self, tokenizer: Any, end: EndToken, rows: Rows):
        self.tokenizer, self.end, self.rows = tokenizer, end, rows
        self.leading = leading_special_ids(tokenizer)
        self.straddling = self.truncated = 0
        self.lost_end = self.lost_only_end = 0  # completions that max_length cut: all, those cut by 1 token

    def __call__(
        self, prompts: list[str], answers: list[list[str]], conversational: list[bool]
    ) -> tuple[list[list[int]], list[list[list[int]]]]:
        """Prompt ids and, per example, the completion ids of each of its answers."""
        prompt_ids = self._encode(prompts)
        whole_ids = iter(self._encode([p + a for p, row in zip(prompts, answers) for a in row]))
        out_prompts, out_completions = [], []
        for row, conv, p_ids in zip(answers, conversational, prompt_ids):
            p_ids = self._frame(p_ids)
            wholes = [self._frame(next(whole_ids)) for _ in row]
            shared = min(_common_prefix_length(p_ids, w) for w in wholes)
            if shared == len(p_ids):
                completions = [w[shared:] for w in wholes]
            else:
                self.straddling += 1
                if shared == 0:
                    # Nothing left of the prompt (its only token merges with the answer): keep the
                    # prompt as tokenised alone and each answer as tokenised alone.
                    completions = self._encode(row)
                else:
                    p_ids = p_ids[:shared]
                    completions = [w[shared:] for w in wholes]
            out_prompts.append(p_ids)
            out_completions.append([self._close(c, conv) for c in completions])
        return out_prompts, out_completions

    def _encode(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _frame(self, ids: list[int]) -> list[int]:
        """Put the tokenizer's leading specials (BOS) in front, unless the text (or template) has them."""
        lead = self.leading
        if lead and ids[: len(lead)] != lead:
            ids = lead + ids
        bos = self.tokenizer.bos_token_id
        n = 0
        while bos is not None and n + 1 < len(ids) and ids[n] == ids[n + 1] == bos:
            n += 1  # "<s><s>...": the text repeated the BOS the tokenizer or the template wrote
        return ids[n:]

    def _close(self, ids: list[int], conversational: bool) -> list[int]:
        end = self.end.id if conversational else self.end.text_id
        if end is None:
            return ids
        # Plain text may hold either end token: "...<|im_end|>\n" rendered by a chat template.
        closers = {end} if conversational else {end, self.end.id}
        last = max((i for i, token in enumerate(ids) if token in closers), default=None)
        if last is not None and (conversational or not self.tokenizer.decode(ids[last + 1 :]).strip()):
            return ids[: last + 1]
        return ids + [end]

    def count_truncation(self, prompt_cut: bool, completions: list[list[int]], fitted: list[list[int]]) -> None:
        """Count one row: whether its prompt was cut, and its completions before and after the cut."""
        cut = [len(f) < len(c) for c, f in zip(completions, fitted)]
        self.truncated += prompt_cut or any(cut)
        ends = {self.end.id, self.end.text_id} - {None}
        for ids, kept in zip(completions, fitted):
            if len(kept) < len(ids) and ids[-1] in ends:  # a cut from the right takes the end token first
                self.lost_end += 1
                self.lost_only_end += len(kept) == len(ids) - 1

    def warn(self, max_length: int | None, max_prompt_length: int | None) -> None:
        n, source = len(self.rows), self.rows.source
        if self.straddling:
            warnings.warn(
                f"{source}: in {self.straddling} of {n} rows a token straddles the prompt/completion boundary when "
                "prompt + completion is tokenised as one text; those prompts end before it and the completion starts "
                "with it (to avoid this, end prompts without trailing whitespace and start completions with the "
                "whitespace that separates them from the prompt)",
                stacklevel=3,
            )
        if self.truncated:
            lost = ""
            if self.lost_end:
                many = self.lost_end != 1
                lost = (
                    f"; {self.lost_end} completion{'s' * many} lost {'their' if many else 'its'} end token "
                    f"({self.lost_only_end} of them only that token) and are trained as unfinished answers, as in "
                    "TRL: raise max_length to keep it"
                )
            warnings.warn(
                f"{source}: {self.truncated} of {n} rows truncated to max_length={max_length}, "
                f"max_prompt_length={max_prompt_length} (prompts lose their start, completions their end){lost}",
                stacklevel=3,
            )


def _common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def prompt_limit(
    max_length: int | None, max_prompt_length: int | None, completions: list[list[int]], truncation_mode: str | None
) -> int | None:
    """Most prompt tokens a row keeps. aihf's rule (``truncation_mode`` None) and TRL's ``"keep_start"``:
    ``max_prompt_length`` (completions then lose their end). TRL's ``"keep_end"``: also at most
    ``max_length`` minus the row's longest completion (at least 1), so that the prompt loses its start
    and the completions stay whole; a completion of ``max_length`` tokens or more still loses its end."""
    if truncation_mode != "keep_end" or max_length is None:
        return max_prompt_length
    room = max(1, max_length - max(map(len, completions), default=0))
    return room if max_prompt_length is None else min(room, max_prompt_length)


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


def _fit_completion(ids: list[int], prompt_len: int, max_length: int | None) -> list[int]:
    return ids[: max_length - prompt_len] if max_length is not None else ids
