"""Which special tokens frame a training sequence: the BOS a tokenizer adds, and the end token.

Plain-text rows are encoded without the tokenizer's special tokens and framed here, so that
every sequence has exactly one leading BOS when the tokenizer adds one (a text that already
starts with it gets none added) and never the EOS a post-processor appends to every encoding
(inside the prompt it would tell the model the answer is over before it starts).

The *end token* closes every completion and stops self-play sampling. It is the ``eos_token``
the user set (TRL's ``eos_token``), for every row. Otherwise a conversation's answer ends with
the token that ends an assistant turn in the chat template, when the template does not write
the tokenizer's EOS there (ChatML's ``<|im_end|>`` with EOS ``<|endoftext|>``, Llama 3's
``<|eot_id|>``, Gemma's ``<end_of_turn>``), else with the tokenizer's EOS; a plain-text
completion ends with the tokenizer's EOS (as in TRL, and as the model's generation config
expects of text without a chat template), or with the end-of-turn token if it already has one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

logger = logging.getLogger(__name__)
_announced: set[str] = set()

# Placeholders rendered through the chat template to find what it writes after an answer.
_PROBE_QUESTION = "aihf probe question"
_PROBE_ANSWER = "aihf probe answer"


@dataclass(frozen=True)
class EndToken:
    """The token that closes conversations' answers: ``token`` (its text), ``id`` and ``origin``
    (why it was chosen); ``text_id`` closes plain-text completions."""

    token: str | None
    id: int | None
    origin: str
    text_id: int | None


def leading_special_ids(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts before every encoded text (``[bos_id]`` for Llama-style tokenizers)."""
    probe = "a"
    bare = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe)["input_ids"])
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start]
    return []  # the post-processor rewrites the text itself; add nothing rather than guess


def end_token(tokenizer: Any, eos_token: str | None = None) -> EndToken:
    """The end token for ``tokenizer`` (see the module docstring); logs which one once.

    Raises :class:`aihf.ConfigError` if ``eos_token`` is not a token of the tokenizer.
    """
    eos = tokenizer.eos_token_id
    if eos_token is not None:
        if eos_token not in tokenizer.get_vocab():
            raise ConfigError(f"eos_token: '{eos_token}' is not a token of the tokenizer's vocabulary")
        end_id = tokenizer.convert_tokens_to_ids(eos_token)
        end = EndToken(eos_token, end_id, "set by eos_token", end_id)
    else:
        turn_end = template_turn_end(tokenizer)
        if turn_end is not None and turn_end != tokenizer.eos_token:
            turn_end_id = tokenizer.convert_tokens_to_ids(turn_end)
            end = EndToken(turn_end, turn_end_id, "the chat template's end of turn", eos)
        else:
            end = EndToken(tokenizer.eos_token, eos, "the tokenizer's EOS", eos)
    _announce(end, tokenizer.eos_token)
    return end


def template_turn_end(tokenizer: Any) -> str | None:
    """The special token the chat template writes right after an assistant's answer, if any.

    The tokenizer's EOS when the template writes it anywhere after the answer (the turn then
    ends with EOS); else the first special or added token after the answer; else ``None``.
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": _PROBE_QUESTION}, {"role": "assistant", "content": _PROBE_ANSWER}]
    try:
        rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # templates raise on anything they do not expect (a missing system turn...)
        return None
    if not isinstance(rendered, str) or _PROBE_ANSWER not in rendered:
        return None
    tail = rendered[rendered.rindex(_PROBE_ANSWER) + len(_PROBE_ANSWER) :]
    ids = list(tokenizer(tail, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id in ids:
        return tokenizer.eos_token
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    for i in ids:
        if i in special and i != tokenizer.unk_token_id:
            return tokenizer.convert_ids_to_tokens(i)
    return None


def _announce(end: EndToken, eos: str | None) -> None:
    if end.id is None:
        message = "no end token: the tokenizer has no EOS, so completions are not closed; set eos_token"
    elif end.id == end.text_id:
        message = f"end token '{end.token}' (id {end.id}, {end.origin}): it closes every completion"
    else:
        message = (
            f"end token '{end.token}' (id {end.id}, {end.origin}) for conversations; plain-text completions "
            f"end with the tokenizer's EOS '{eos}' (id {end.text_id}); set eos_token to use one token for all"
        )
    if message not in _announced:  # once per process, although training and evaluation data both ask
        _announced.add(message)
        logger.info(message)
