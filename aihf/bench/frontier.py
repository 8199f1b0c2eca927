"""Gold at matched KL: each run's frontier (test KL and gold at points along training) read at fixed
KL levels, and the paired comparison of methods at those levels (docs/benchmark.md, "The protocol").

A run's frontier is its list of points in training order, each ``{"kl", "gold", "per_prompt_gold"}``
(KL to the base in nats per continuation; gold averaged over the test prompts, and per prompt).
"""

from __future__ import annotations

from .stats import mean_ci


def _mix(a: float, b: float, w: float) -> float:
    return (1 - w) * a + w * b


def gold_at_kl(frontier: list[dict], level: float) -> dict | None:
    """The gold where the frontier first reaches KL ``level``, in training order: for the first point
    ``i`` with ``kl_i >= level``, the linear interpolation between points ``i-1`` and ``i`` with
    weight ``w = (level - kl_{i-1}) / (kl_i - kl_{i-1})``, applied alike to the mean gold and to each
    prompt's gold (the first point itself if it is already at ``level``). Returns
    ``{"gold", "per_prompt_gold", "steps"}`` (``steps``: the interpolated optimizer step), or None
    when no point reaches ``level`` ("not reached")."""
    for i, point in enumerate(frontier):
        if point["kl"] < level:
            continue
        if i == 0:
            return {"gold": point["gold"], "per_prompt_gold": list(point["per_prompt_gold"]), "steps": point["steps"]}
        prev = frontier[i - 1]
        w = (level - prev["kl"]) / (point["kl"] - prev["kl"])
        return {
            "gold": _mix(prev["gold"], point["gold"], w),
            "per_prompt_gold": [_mix(a, b, w) for a, b in zip(prev["per_prompt_gold"], point["per_prompt_gold"])],
            "steps": _mix(prev["steps"], point["steps"], w),
        }
    return None


def matched_rows(runs_by_row: dict[tuple[str, int], list[dict]], levels: list[float], r_base: float, r_demo: float):
    """Per (method, budget) and KL level: the gold at that level with its normal 95 % interval over
    (seed, test prompt) units of the seeds whose frontier reaches it, raw and normalised
    ``(R - R_base) / (R_demo - R_base)``, and how many seeds did not reach it."""
    scale = r_demo - r_base
    rows = []
    for (method, budget), runs in runs_by_row.items():
        row = {"method": method, "budget": budget, "seeds": len(runs), "levels": []}
        for level in levels:
            found = [gold_at_kl(r["frontier"], level) for r in runs]
            units = [g for f in found if f is not None for g in f["per_prompt_gold"]]
            gold = mean_ci(units) if units else None
            row["levels"].append(
                {
                    "kl": level,
                    "reached": sum(f is not None for f in found),
                    "not_reached": sum(f is None for f in found),
                    "gold": gold,
                    "gold_normalised": ((gold[0] - r_base) / scale, gold[1] / abs(scale)) if gold and scale else None,
                }
            )
        rows.append(row)
    return rows


def paired_at_kl(
    pairs: list[tuple[str, str, int, list[tuple[dict, dict]]]], levels: list[float], r_base: float, r_demo: float
) -> list[dict]:
    """Each (variant, baseline, budget, [(variant run, baseline run) per seed]) at each KL level: the
    gold difference variant - baseline with its normal 95 % interval over (seed, test prompt) units,
    paired (same seed, same prompt, each interpolated at the level), over the seeds where both reach
    the level; raw and normalised by ``R_demo - R_base``; and each side's seeds that did not."""
    scale = r_demo - r_base
    rows = []
    for method, baseline, budget, seed_runs in pairs:
        for level in levels:
            diffs, both, ours_missing, theirs_missing = [], 0, 0, 0
            for ours, theirs in seed_runs:
                a, b = gold_at_kl(ours["frontier"], level), gold_at_kl(theirs["frontier"], level)
                ours_missing += a is None
                theirs_missing += b is None
                if a is None or b is None:
                    continue
                both += 1
                diffs += [x - y for x, y in zip(a["per_prompt_gold"], b["per_prompt_gold"])]
            diff = mean_ci(diffs) if diffs else None
            rows.append(
                {
                    "budget": budget,
                    "method": method,
                    "baseline": baseline,
                    "kl": level,
                    "seeds": both,
                    "method_not_reached": ours_missing,
                    "baseline_not_reached": theirs_missing,
                    "gold_difference": diff,
                    "normalised_difference": (diff[0] / scale, diff[1] / abs(scale)) if diff and scale else None,
                }
            )
    return rows
