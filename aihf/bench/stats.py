"""The statistics of the benchmark reports (``aihf bench llm``, ``aihf control bench``): a mean, its
normal 95 % confidence interval, and the per-seed summary of paired differences. No dependency
beyond NumPy, so the control benchmark can use it without the LLM stack."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["mean", "mean_ci", "seed_differences"]


def mean(values: list[float]) -> float:
    """The mean; NaN for no values."""
    return sum(values) / len(values) if values else float("nan")


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its normal 95 % confidence interval (0 for fewer than 2 values)."""
    n = len(values)
    m = mean(values)
    if n < 2:
        return m, 0.0
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    return m, 1.96 * sd / math.sqrt(n)


def seed_differences(diffs: list[float]) -> dict:
    """Paired differences ``ours - theirs``, one per seed, summarised as ``{"mean", "per_seed",
    "wins"}``: their mean, the list itself and how many are > 0."""
    return {"mean": float(np.mean(diffs)), "per_seed": diffs, "wins": sum(d > 0 for d in diffs)}
