"""Validation of raw rows and their normalisation to (prompt, completion) texts.

Accepted row formats
--------------------
Demonstrations:
  * standard: ``{"prompt": str, "completion": str}``
  * conversational: ``{"prompt": [messages], "completion": [messages]}`` or
    ``{"messages": [messages]}`` whose last message is the assistant's answer.
Preferences:
  * standard: ``{"prompt": str, "chosen": str, "rejected": str}``
  * conversational: the same three fields as message lists;
  * implicit prompt: ``{"chosen": str, "rejected": str}`` full texts sharing a prefix (as in
    Anthropic-HH ``"\\n\\nHuman: ... \\n\\nAssistant: ..."``) or message lists sharing leading
    messages; the shared part becomes the prompt. Texts are cut after the last Anthropic-HH
    assistant marker in the shared part, else on the last token boundary that both texts
    share (never inside a grapheme, in any script; see :func:`implicit_prompt_cut`);
  * any of the above with a gold ``reference`` answer beside ``chosen``/``rejected``; the
    trainer uses it as a demonstration.

A message is ``{"role": one of ROLES, "content": str}``. Conversational rows are rendered with
the tokenizer's chat template; the prompt is the rendering of the prompt's messages with the
generation prompt. A template whose generation prompt an answered turn does not repeat (the
DeepSeek-R1 family opens it with ``<think>\\n``) is split at the longest common prefix of
the two renderings, with one warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import regex

from ..errors import DataError
from .sources import Rows

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
HH_ASSISTANT_MARKER = "\n\nAssistant:"
# Token-boundary candidates tried when cutting an implicit prompt (each costs one encoding).
_MAX_CUT_TRIALS = 16


@dataclass(frozen=True)
class DemonstrationText:
    prompt: str
    completion: str
    conversational: bool


@dataclass(frozen=True)
class PreferenceText:
    prompt: str
    chosen: str
    rejected: str
    reference: str | None
    conversational: bool


class _Row:
    """One record plus the coordinates needed to blame it."""

    def __init__(self, rows: Rows, where: str, record: Any):
        self.source, self.where, self.record = rows.source, where, record
        self.empty_cells_are_missing = rows.empty_cells_are_missing
        if not isinstance(record, dict):
            raise self.error(None, f"expected a mapping of fields, got {type(record).__name__}")

    def error(self, field: str | None, problem: str) -> DataError:
        return DataError(self.source, self.where, field, problem)

    def has_value(self, field: str) -> bool:
        """Whether an optional field is given (absent, null, or an empty CSV cell mean no)."""
        value = self.record.get(field)
        return value is not None and not (self.empty_cells_are_missing and value == "")

    def get(self, field: str) -> Any:
        if field not in self.record:
            present = ", ".join(sorted(map(str, self.record))) or "none"
            raise self.error(field, f"missing (fields present: {present})")
        return self.record[field]

    def text_or_messages(self, field: str, *, allow_empty: bool = False) -> str | list[dict]:
        value = self.get(field)
        if isinstance(value, str):
            if not allow_empty and not value.strip():
                raise self.error(field, "empty")
            return value
        if isinstance(value, (list, tuple)):
            messages = [self.message(f"{field}[{i}]", m) for i, m in enumerate(value)]
            if not allow_empty and not any(m["content"].strip() for m in messages):
                raise self.error(field, "empty (no message with content)")
            return messages
        raise self.error(
            field, f"wrong type: expected a string or a list of {{role, content}} messages, got {_type_name(value)}"
        )

    def message(self, field: str, value: Any) -> dict:
        if not isinstance(value, dict):
            raise self.error(field, f"wrong type: expected a {{role, content}} message, got {_type_name(value)}")
        for key in ("role", "content"):
            if key not in value:
                raise self.error(f"{field}.{key}", "missing")
            if not isinstance(value[key], str):
                raise self.error(f"{field}.{key}", f"wrong type: expected a string, got {_type_name(value[key])}")
        if value["role"] not in ROLES:
            raise self.error(f"{field}.role", f"unknown chat role '{value['role']}' (expected one of {sorted(ROLES)})")
        return {"role": value["role"], "content": value["content"]}

    def same_kind(self, field: str, value: Any, kind_field: str, kind_value: Any) -> None:
        if isinstance(value, str) != isinstance(kind_value, str):
            raise self.error(
                field,
                f"wrong type: {_kind(value)} while '{kind_field}' is {_kind(kind_value)}; use plain strings or "
                "message lists for both",
            )


def demonstration_texts(rows: Rows, tokenizer: Any = None) -> list[DemonstrationText]:
    """Validate every demonstration row and return its prompt and completion texts."""
    out = []
    split_by_prefix: list[str] = []
    for where, record in rows:
        row = _Row(rows, where, record)
        if {"chosen", "rejected"} <= set(map(str, row.record)) and not ({"completion", "messages"} & set(row.record)):
            raise row.error(
                "completion",
                "missing: this row is a preference pair (chosen, rejected), not a demonstration; preference pairs "
                "go in preferences= (TRL's train_dataset=; aihf train --preferences)",
            )
        if "messages" in row.record and "completion" not in row.record:
            messages = row.text_or_messages("messages")
            if isinstance(messages, str):
                raise row.error("messages", "wrong type: expected a list of {role, content} messages, got a string")
            if messages[-1]["role"] != "assistant":
                raise row.error(
                    f"messages[{len(messages) - 1}].role", "the last message must be the assistant's answer"
                )
            if not messages[-1]["content"].strip():
                raise row.error(f"messages[{len(messages) - 1}].content", "empty completion")
            prompt, completion = messages[:-1], messages[-1:]
        else:
            prompt = row.text_or_messages("prompt", allow_empty=True)
            completion = row.text_or_messages("completion")
            row.same_kind("completion", completion, "prompt", prompt)
        if isinstance(prompt, str):
            out.append(DemonstrationText(prompt, completion, False))
        else:
            field = "messages" if "messages" in row.record and "completion" not in row.record else "completion"
            p, (c,) = _render(row, tokenizer, prompt, [completion], field, split_by_prefix)
            out.append(DemonstrationText(p, c, True))
    _warn_split_by_prefix(rows, split_by_prefix)
    return out


def preference_texts(
    rows: Rows, tokenizer: Any = None, implicit_prompt_marker: str | None = HH_ASSISTANT_MARKER
) -> list[PreferenceText]:
    """Validate every preference row and return prompt, chosen, rejected (and reference) texts."""
    out = []
    split_by_prefix: list[str] = []
    for where, record in rows:
        row = _Row(rows, where, record)
        if "chosen" not in row.record and ({"messages", "completion", "text"} & set(map(str, row.record))):
            present = ", ".join(sorted(map(str, row.record)))
            raise row.error(
                "chosen",
                f"missing: this row is a demonstration ({present}), not a preference pair; demonstrations (SFT "
                "data) go in demonstrations= (aihf train --demonstrations), with pref_weight=0 or --method sft for SFT "
                "alone",
            )
        chosen = row.text_or_messages("chosen")
        rejected = row.text_or_messages("rejected")
        row.same_kind("rejected", rejected, "chosen", chosen)
        reference = None
        if row.has_value("reference"):
            reference = row.text_or_messages("reference")
            row.same_kind("reference", reference, "chosen", chosen)
        if "prompt" in row.record:
            prompt = row.text_or_messages("prompt", allow_empty=True)
            row.same_kind("chosen", chosen, "prompt", prompt)
        else:
            prompt, chosen, rejected = _split_implicit_prompt(row, chosen, rejected, implicit_prompt_marker, tokenizer)
            if reference is not None:
                # An implicit-prompt reference is a full text too: it must continue the same prompt.
                if reference[: len(prompt)] != prompt:
                    raise row.error("reference", "does not start with the prompt shared by 'chosen' and 'rejected'")
                reference = reference[len(prompt) :]
                if not reference or (isinstance(reference, str) and not reference.strip()):
                    raise row.error("reference", "empty once the shared prompt is removed")
        if chosen == rejected:
            raise row.error("rejected", "identical to 'chosen': a pair must differ to express a preference")
        answers = [chosen, rejected] + ([reference] if reference is not None else [])
        if isinstance(prompt, str):
            conversational = False
        else:
            prompt, answers = _render(row, tokenizer, prompt, answers, "chosen", split_by_prefix)
            conversational = True
        ref_text = answers[2] if reference is not None else None
        out.append(PreferenceText(prompt, answers[0], answers[1], ref_text, conversational))
    _warn_split_by_prefix(rows, split_by_prefix)
    return out


def _split_implicit_prompt(
    row: _Row, chosen: Any, rejected: Any, marker: str | None, tokenizer: Any
) -> tuple[Any, Any, Any]:
    if isinstance(chosen, str):
        shared = _common_prefix(chosen, rejected)
        if marker and marker in shared:
            cut = shared.rindex(marker) + len(marker)
        else:
            cut = implicit_prompt_cut(chosen, rejected, tokenizer)
        prompt = chosen[:cut]
        if not prompt.strip():
            raise row.error(
                "chosen", "no 'prompt' field and 'chosen' and 'rejected' share no prefix to use as the prompt"
            )
        chosen, rejected = chosen[cut:], rejected[cut:]
        for field, answer in (("chosen", chosen), ("rejected", rejected)):
            if not answer.strip():
                raise row.error(field, "empty once the prefix shared with the other answer is taken as the prompt")
        return prompt, chosen, rejected
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n == 0:
        raise row.error("chosen", "no 'prompt' field and 'chosen' and 'rejected' share no leading messages")
    for field, answer in (("chosen", chosen[n:]), ("rejected", rejected[n:])):
        if not answer:
            raise row.error(field, "empty once the messages shared with the other answer are taken as the prompt")
    return chosen[:n], chosen[n:], rejected[n:]


def implicit_prompt_cut(chosen: str, rejected: str, tokenizer: Any = None) -> int:
    """Where the prompt shared by two full texts ends (a character offset into both).

    The cut is a grapheme boundary of both texts (a flag, an emoji sequence or a letter with its
    combining marks is never split) not preceded by whitespace (the answers start with their
    space, as in Anthropic-HH), no later than their first difference. With a ``tokenizer``, it is
    the last such position where both texts' tokens break: the prompt tokenised alone is a
    prefix of each text tokenised whole (tried over the last few candidates). Without one, or if
    none qualifies, it is the last shared whitespace, else the last shared grapheme boundary.
    Returns 0 when the texts share nothing usable.
    """
    n = len(_common_prefix(chosen, rejected))
    # Grapheme ends up to n are computed on texts cut one character after n: a boundary at or
    # before n only depends on the characters up to n.
    ends = _grapheme_ends(chosen[: n + 1]) & _grapheme_ends(rejected[: n + 1])
    bounds = sorted(c for c in ends if 0 < c <= n)
    if tokenizer is not None:
        candidates = [c for c in reversed(bounds) if not chosen[c - 1].isspace()][:_MAX_CUT_TRIALS]
        if candidates:
            whole = [list(ids) for ids in tokenizer([chosen, rejected], add_special_tokens=False)["input_ids"]]
            for c in candidates:
                ids = list(tokenizer(chosen[:c], add_special_tokens=False)["input_ids"])
                if all(w[: len(ids)] == ids for w in whole):
                    return c
    spaces = [c for c in bounds if c < n and chosen[c].isspace()]
    return spaces[-1] if spaces else (bounds[-1] if bounds else 0)


def _grapheme_ends(text: str) -> set[int]:
    return {m.end() for m in regex.finditer(r"\X", text)}


def _render(
    row: _Row, tokenizer: Any, prompt: list[dict], answers: list[list[dict]], field: str, split_by_prefix: list[str]
) -> tuple[str, list[str]]:
    """Render a conversation with the chat template; answers are what follows the prompt.

    Appends to ``split_by_prefix`` the generation-prompt text that an answered turn lacks,
    when the rendering had to be split at the longest common prefix.
    """
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise row.error(field, "conversational row, but the tokenizer has no chat template to render it")
    if not prompt:
        # Chat templates refuse an empty conversation, and an answer needs a turn to answer.
        where = "messages" if "messages" in row.record and "completion" not in row.record else "prompt"
        raise row.error(where, "no message before the answer: a conversation needs at least one prompt message")
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    fulls = [tokenizer.apply_chat_template(prompt + answer, tokenize=False) for answer in answers]
    cut = min(len(_common_prefix(prompt_text, full)) for full in fulls)
    if cut < len(prompt_text):
        # Tolerated only in the generation prompt itself: the prompt's messages must render alike.
        messages_text = tokenizer.apply_chat_template(prompt, tokenize=False)
        if not all(full.startswith(messages_text) for full in fulls) or cut < len(messages_text):
            raise row.error(
                field,
                "the chat template renders the prompt's messages differently when an answer follows; cannot split",
            )
        split_by_prefix.append(prompt_text[cut:])
    return fulls[0][:cut], [full[cut:] for full in fulls]


def _warn_split_by_prefix(rows: Rows, split_by_prefix: list[str]) -> None:
    if split_by_prefix:
        warnings.warn(
            f"{rows.source}: the chat template's generation prompt ends with {split_by_prefix[0]!r}, which an answered "
            f"turn does not repeat; {len(split_by_prefix)} of {len(rows)} rows were split at the longest common "
            "prefix of the two renderings (the model trains without that text before its answers)",
            stacklevel=3,
        )


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _kind(value: Any) -> str:
    return "a string" if isinstance(value, str) else "a message list"
