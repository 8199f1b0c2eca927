"""The statistics of the benchmark reports (``aihf bench llm``, ``aihf control bench``): a mean, its
normal 95 % confidence interval, and the per-seed summary of paired differences. No dependency
beyond NumPy, so the control benchmark can use it without the LLM stack."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["mean", "mean_ci", "ranks", "spearman", "seed_differences"]


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


def ranks(values: list[float]) -> list[float]:
    """1-based ranks of ``values``, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (Pearson's of their average-tie ranks); NaN
    when either is constant or has fewer than 2 values."""
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} and {len(y)} values")
    if len(x) < 2:
        return float("nan")
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / (vx * vy) ** 0.5 if vx > 0 and vy > 0 else float("nan")


def seed_differences(diffs: list[float]) -> dict:
    """Paired differences ``ours - theirs``, one per seed, summarised as ``{"mean", "per_seed",
    "wins"}``: their mean, the list itself and how many are > 0."""
    return {"mean": float(np.mean(diffs)), "per_seed": diffs, "wins": sum(d > 0 for d in diffs)}
