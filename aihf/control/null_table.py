"""The benchmark's check against the null rewards: each learned reward minus each null reward,
paired by seed (``aihf control bench`` report; docs/control.md, "Null rewards").

A null reward (``null_constant``, ``null_untrained``) runs the same SAC loop on a reward that never
trains, so it measures what the survival bonus, SAC's exploration and the network's prior give
with no information from the data. A learned reward that does not beat it is not a result.
"""

from __future__ import annotations

from ..bench.stats import seed_differences
from .config import NULL_METHODS

__all__ = ["LEARNED_METHODS", "difference_cells", "null_differences", "null_table_lines", "not_above_null"]

LEARNED_METHODS = ("aihf", "pref_rl", "ml_irl", "two_stage")


def null_differences(rows: list[dict]) -> list[dict]:
    """For every (env, setting, learned method) and every null method run on that env: the
    learned reward's ``final`` and ``late`` normalised return minus the null reward's, seed by seed
    (the null reward ignores the data, so one run per env and seed serves every setting). Each row:
    ``env_id, setting, method, null, seeds``, ``final`` and ``late`` as ``{mean, per_seed, wins}``,
    and ``above``: the mean final difference is > 0 and the learned reward is ahead in more than
    half of the seeds."""
    nulls: dict = {}
    for r in sorted(rows, key=lambda r: r["setting"]):
        if r["method"] in NULL_METHODS:
            nulls.setdefault((r["env_id"], r["method"], r["seed"]), r)
    groups: dict = {}
    for r in rows:
        if r["method"] in LEARNED_METHODS:
            groups.setdefault((r["env_id"], r["setting"], r["method"]), []).append(r)
    out = []
    for (env_id, setting, method), runs in sorted(groups.items()):
        for null in NULL_METHODS:
            pairs = sorted(
                ((r["seed"], r, nulls[(env_id, null, r["seed"])]) for r in runs if (env_id, null, r["seed"]) in nulls),
                key=lambda p: p[0],
            )
            if not pairs:
                continue
            row = {"env_id": env_id, "setting": setting, "method": method, "null": null, "seeds": [p[0] for p in pairs]}
            for metric in ("final", "late"):
                diffs = [float(a[metric] - b[metric]) for _, a, b in pairs]
                row[metric] = seed_differences(diffs)
            row["above"] = bool(row["final"]["mean"] > 0 and row["final"]["wins"] > len(pairs) / 2)
            out.append(row)
    return out


def not_above_null(differences: list[dict]) -> set[tuple[str, str, str]]:
    """``(env_id, setting, method)`` of the learned rewards that fail against at least one null reward."""
    return {(d["env_id"], d["setting"], d["method"]) for d in differences if not d["above"]}


def null_table_lines(differences: list[dict]) -> list[str]:
    """The markdown section of :func:`null_differences` (empty when no null reward has run)."""
    if not differences:
        return []
    lines = [
        "## Learned rewards minus the null rewards, paired by seed",
        "",
        "Same env and seed; the null rewards (`null_constant`: SAC on a constant, `null_untrained`: on the reward",
        "net as initialised; the survival bonus as configured) ignore the data, so one run per env and seed",
        "serves every setting. Mean difference over seeds [each seed's] and in how many seeds the learned reward",
        "is ahead. **not above null**: the mean final difference is <= 0 or it is ahead in half the seeds or",
        "fewer; such a learned reward is not a result (marked † in the table above).",
        "",
        "| env | demos | pairs | method | null | final: method - null | ahead | late: method - null | ahead | |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in differences:
        demos, pairs = d["setting"].split("_p")
        cells = difference_cells(d)
        verdict = "above" if d["above"] else "**not above null**"
        head = f"| {d['env_id']} | {demos} | {pairs} | {d['method']} | {d['null']} | "
        lines.append(head + " | ".join(cells) + f" | {verdict} |")
    return [*lines, ""]


def difference_cells(entry: dict) -> list[str]:
    """The table cells of a paired difference (``final`` and ``late``): the mean [each seed's] and how
    many seeds are ahead."""
    cells = []
    for metric in ("final", "late"):
        m = entry[metric]
        each = ", ".join(f"{x:+.2f}" for x in m["per_seed"])
        cells += [f"{m['mean']:+.2f} [{each}]", f"{m['wins']}/{len(entry['seeds'])}"]
    return cells
