"""A micro base model for the sentiment task's tests: a random 1-layer Llama with a small BPE
tokenizer trained on one play (seconds to build, no pre-training)."""

from aihf.tasks.sentiment.base import train_tokenizer
from aihf.tasks.sentiment.corpus import load_plays
from aihf.tasks.tiny import build_model


def micro_base(folder: str) -> str:
    tokenizer = train_tokenizer(load_plays()["hamlet"], 400)
    model = build_model(tokenizer, "llama", hidden_size=32, num_layers=1, num_heads=2, seed=0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def count_e(text: str) -> float:
    """A plug-in gold reward: the fraction of letters that are 'e' (never all-zero, unlike VADER on noise)."""
    letters = [c for c in text.lower() if c.isalpha()]
    return sum(c == "e" for c in letters) / max(1, len(letters))


def not_a_float(text: str) -> str:
    return text
