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
    messages; the shared part becomes the prompt;
  * any of the above with a gold ``reference`` answer beside ``chosen``/``rejected``; the
    trainer uses it as a demonstration.

A message is ``{"role": one of ROLES, "content": str}``. Conversational rows are rendered with
the tokenizer's chat template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import DataError
from .sources import Rows

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
HH_ASSISTANT_MARKER = "\n\nAssistant:"


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
    for where, record in rows:
        row = _Row(rows, where, record)
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
            p, (c,) = _render(row, tokenizer, prompt, [completion], "completion")
            out.append(DemonstrationText(p, c, True))
    return out


def preference_texts(
    rows: Rows, tokenizer: Any = None, implicit_prompt_marker: str | None = HH_ASSISTANT_MARKER
) -> list[PreferenceText]:
    """Validate every preference row and return prompt, chosen, rejected (and reference) texts."""
    out = []
    for where, record in rows:
        row = _Row(rows, where, record)
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
            prompt, chosen, rejected = _split_implicit_prompt(row, chosen, rejected, implicit_prompt_marker)
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
            prompt, answers = _render(row, tokenizer, prompt, answers, "chosen")
            conversational = True
        ref_text = answers[2] if reference is not None else None
        out.append(PreferenceText(prompt, answers[0], answers[1], ref_text, conversational))
    return out


def _split_implicit_prompt(row: _Row, chosen: Any, rejected: Any, marker: str | None) -> tuple[Any, Any, Any]:
    if isinstance(chosen, str):
        shared = _common_prefix(chosen, rejected)
        if marker and marker in shared:
            cut = shared.rindex(marker) + len(marker)
        else:
            # Back up to a word boundary so that both answers start with the whitespace token a
            # tokenizer would have produced for the full text.
            space = max(shared.rfind(" "), shared.rfind("\n"))
            cut = space if space > 0 else len(shared)
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


def _render(row: _Row, tokenizer: Any, prompt: list[dict], answers: list[list[dict]], field: str):
    """Render a conversation with the chat template; answers are what follows the prompt."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise row.error(field, "conversational row, but the tokenizer has no chat template to render it")
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    rendered = []
    for answer in answers:
        full = tokenizer.apply_chat_template(prompt + answer, tokenize=False)
        if not full.startswith(prompt_text):
            raise row.error(
                field, "the chat template renders the prompt differently when an answer follows it; cannot split"
            )
        rendered.append(full[len(prompt_text) :])
    return prompt_text, rendered


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _kind(value: Any) -> str:
    return "a string" if isinstance(value, str) else "a message list"
