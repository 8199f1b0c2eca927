"""The gold reward and the Bradley-Terry labeller of the sentiment task.

The default gold is VADER's compound sentiment score (Hutto & Gilbert, ICWSM 2014; the
``vaderSentiment`` package), a fixed lexicon-and-rules scorer in [-1, 1] that nobody here
wrote. Any ``str -> float`` can replace it: ``--gold module:function``.
"""

from __future__ import annotations

import importlib
import math
import random
from collections.abc import Callable, Sequence

from ...errors import ConfigError

DEFAULT_GOLD = "aihf.tasks.sentiment.gold:vader_compound"

_analyzer = None


def vader_compound(text: str) -> float:
    """VADER's compound score of ``text``: in [-1, 1], 0 for text without sentiment words."""
    global _analyzer
    if _analyzer is None:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError:
            raise ConfigError("the default gold reward needs vaderSentiment: pip install vaderSentiment") from None
        _analyzer = SentimentIntensityAnalyzer()
    return float(_analyzer.polarity_scores(text)["compound"])


def load_gold(spec: str, *, setting: str = "--gold") -> Callable[[str], float]:
    """The function named by ``spec`` (``"package.module:function"``); a :class:`ConfigError`
    naming ``setting`` if it cannot be imported or does not map a string to a float."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{setting} '{spec}': expected 'module:function'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{setting} '{spec}': cannot import it ({e})") from None
    if not callable(fn):
        raise ConfigError(f"{setting} '{spec}': not callable")
    try:
        value = fn("a test sentence")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise TypeError(f"returned {value!r}")
    except Exception as e:  # the user's function: any failure is a bad setting
        raise ConfigError(f"{setting} '{spec}': must map a string to a finite float ({e})") from None
    return fn


def bradley_terry_prob(gold_a: float, gold_b: float, temperature: float) -> float:
    """P(a preferred over b) = sigmoid((gold_a - gold_b) / temperature) (Bradley & Terry, 1952).

    ``temperature`` > 0 is in gold units; the task sets it to a multiple of the spread (standard
    deviation) of the base model's gold, since one tied to raw values makes labels nearly
    deterministic or pure noise depending on the scorer's scale.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = (gold_a - gold_b) / temperature
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def label_pairs(
    gold_a: Sequence[float], gold_b: Sequence[float], temperature: float, rng: random.Random
) -> list[tuple[bool, float]]:
    """One Bradley-Terry draw per pair: ``(a is preferred, P(a preferred))``."""
    out = []
    for a, b in zip(gold_a, gold_b, strict=True):
        p = bradley_terry_prob(a, b, temperature)
        out.append((rng.random() < p, p))
    return out


def gold_statistics(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation, fraction non-zero, min and max of gold values."""
    n = len(values)
    if n == 0:
        return {"n": 0}
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, n - 1))
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "fraction_nonzero": sum(v != 0 for v in values) / n,
        "fraction_positive": sum(v > 0 for v in values) / n,
        "min": min(values),
        "max": max(values),
    }
