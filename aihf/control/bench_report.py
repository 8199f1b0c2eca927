"""The control benchmark's report (``aihf control bench --report``, and the end of every sweep): the
per-run result files aggregated into ``results.json``, ``results.md`` (the table, AIHF minus each
baseline paired by seed, each learned reward minus the null rewards, the CPU-hours) and
``curves_<env>.png``."""

from __future__ import annotations

import json
import os

import numpy as np

from ..bench.stats import seed_differences
from .null_table import difference_cells, not_above_null, null_differences, null_table_lines
from .plots import plot_curves

__all__ = [
    "METHOD_ORDER", "NULLS", "REFERENCE", "DATA_FREE", "load_results", "late_mean", "paired_differences", "report"
]

# The null rewards ignore all data: one run per env and seed, and so does the true-reward reference
# (REFERENCE: SAC on the env's reward).
NULLS, REFERENCE = ["null_constant", "null_untrained"], ["true_reward"]
DATA_FREE = (*NULLS, *REFERENCE)  # one run per env and seed, shown in every row of the table
METHOD_ORDER = ("aihf", "pref_rl", "ml_irl", "two_stage", "bc", "null_constant", "null_untrained", "true_reward")


def load_results(results: str) -> list[dict]:
    rows = []
    root = os.path.join(results, "run_results")
    for env_id in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        for name in sorted(os.listdir(os.path.join(root, env_id))):
            if name.endswith(".json"):
                with open(os.path.join(root, env_id, name)) as f:
                    r = json.load(f)
                setting, method, _ = name[: -len(".json")].split("__")
                rows.append(
                    {
                        "env_id": env_id,
                        "setting": setting,
                        "method": method,
                        "seed": r["seed"],
                        "final": _number(r["final"]["normalized_return"]),
                        "late": late_mean(r["history"]),
                        "return": r["final"]["return_mean"],
                        "history": [(h["env_steps"], _number(h["normalized_return"])) for h in r["history"]],
                        "timing": r["timing"],
                    }
                )
    return rows


def _number(value) -> float:
    return float("nan") if value is None else value  # result.json writes NaN as null


LATE_EVALUATIONS = 3


def late_mean(history: list[dict]) -> float:
    """Mean normalised return of the last ``LATE_EVALUATIONS`` evaluations of a run (fewer if it has
    fewer): less noisy than the final evaluation alone, which on HalfCheetah can move by 0.1 or more
    between neighbouring evaluations of one run."""
    values = [_number(h["normalized_return"]) for h in history[-LATE_EVALUATIONS:]]
    return float(np.mean(values)) if values else float("nan")


def paired_differences(rows: list[dict]) -> list[dict]:
    """AIHF minus each baseline, run by run on the same env, seed and data: ML-IRL, BC and ``aihf`` share
    the demonstrations (ML-IRL and BC from the 0-pair setting), ``pref_rl`` and ``two_stage`` the
    pairs; ``true_reward`` (no data: its one run per env and seed) gives the gap to the env's own reward;
    ``aihf (<n> pairs)``, AIHF with the next smaller pair count on the same demonstrations, says whether
    more pairs helped (the first pairs of the larger set are the smaller set: runs take the first N).
    For the final evaluation and the late mean (:func:`late_mean`): the mean difference over
    seeds, each seed's difference and how many seeds AIHF is ahead in."""
    by_key = {(r["env_id"], r["setting"], r["method"], r["seed"]): r for r in rows}
    out = []
    aihf_settings = sorted({(e, s) for (e, s, m, _) in by_key if m == "aihf" and not s.endswith("_p0")})
    for env_id, setting in aihf_settings:
        demos, pairs = setting.split("_p")
        baselines = []  # (label, method, setting of the baseline's run)
        for baseline in ("pref_rl", "ml_irl", "two_stage", "bc", *REFERENCE):
            source = f"{demos}_p0" if baseline in ("ml_irl", "bc") else setting
            if baseline in REFERENCE:
                source = min((s for (e, s, m, _) in by_key if e == env_id and m == baseline), default=setting)
            elif baseline == "pref_rl":  # run in one demonstration setting only: it ignores demonstrations
                source = next(
                    (s for (e, s, m, _) in by_key if e == env_id and m == "pref_rl" and s.endswith(f"_p{pairs}")),
                    setting,
                )
            baselines.append((baseline, baseline, source))
        fewer = [
            int(s.split("_p")[1])
            for (e, s, m, _) in by_key
            if e == env_id and m == "aihf" and s.split("_p")[0] == demos and 0 < int(s.split("_p")[1]) < int(pairs)
        ]
        if fewer:
            baselines.append((f"aihf ({max(fewer)} pairs)", "aihf", f"{demos}_p{max(fewer)}"))
        for label, method, source in baselines:
            seeds = sorted(
                k
                for (e, s, m, k) in by_key
                if e == env_id and s == setting and m == "aihf" and (env_id, source, method, k) in by_key
            )
            if not seeds:
                continue
            row = {"env_id": env_id, "setting": setting, "baseline": label, "seeds": seeds}
            for metric in ("final", "late"):
                diffs = [
                    by_key[(env_id, setting, "aihf", k)][metric] - by_key[(env_id, source, method, k)][metric]
                    for k in seeds
                ]
                row[metric] = seed_differences(diffs)
            out.append(row)
    return out


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{np.mean(values):.2f} ± {np.std(values):.2f} ({len(values)})"


def report(results: str, command: str, data_root: str | None = None) -> dict:
    """Aggregate the per-run files into results.json, results.md and learning-curve PNGs; an env whose
    collected data (``<data_root>/<env>/meta.json``) has a weak demonstrator gets that warning on top."""
    rows = load_results(results)
    checks = {}
    for env_id in sorted({r["env_id"] for r in rows}) if data_root else []:
        meta = os.path.join(data_root, env_id, "meta.json")
        try:
            with open(meta) as f:
                check = json.load(f).get("demonstrator_check") or {}
        except (OSError, ValueError, AttributeError):
            continue  # no data there (runs from elsewhere) or not ours to judge: the table stands without it
        if isinstance(check, dict) and isinstance(check.get("message"), str):  # else not collect's, as above
            checks[env_id] = check
    # The true-reward column only once such a run exists: tables written before it read as they did.
    columns = [m for m in METHOD_ORDER if m not in REFERENCE or any(r["method"] == m for r in rows)]
    nulls = null_differences(rows)
    below_null = not_above_null(nulls)
    table: dict = {}
    for r in rows:
        table.setdefault(r["env_id"], {}).setdefault(r["setting"], {}).setdefault(r["method"], []).append(r["final"])
    lines = [
        "# Control benchmark: normalised return (R - R_random) / (R_expert - R_random)",
        "",
        "Mean ± std over seeds (number of seeds) of the final deterministic evaluation. At 0 preference pairs",
        "AIHF is ML-IRL; pref_rl ignores demonstrations, so its value is repeated across demonstration settings;",
        "ml_irl and bc ignore preferences, so theirs is repeated across pair counts; the null rewards ignore all",
        "data (one run per env and seed, repeated in every row). `–`: not run (yet). †: not above a null reward",
        "(paired by seed, below).",
        *(
            [
                "true_reward: SAC on the env's own reward, one run per env and seed (repeated in every row): what a",
                "perfect learned reward could reach at this budget, a reference, not a method from the data.",
            ]
            if "true_reward" in columns
            else []
        ),
        "",
        f"Aggregated from every result file under `run_results/` by `{command}`; "
        "`aihf control bench --preset <preset> --list` prints every run's command.",
        "",
    ]
    if os.path.exists(os.path.join(results, "reward_quality.md")):
        lines += [
            "How well each run's learned reward orders the preference pairs no run trained on, whatever SAC made "
            "of it: [reward_quality.md](reward_quality.md) (`aihf control bench --reward_quality`).",
            "",
        ]
    recorded = [r["timing"]["cpu_s"] for r in rows if "cpu_s" in r["timing"]]
    cpu_hours = sum(recorded) / 3600 if recorded else None
    if recorded:
        unknown = len(rows) - len(recorded)
        runs = f"{len(recorded)} run" + "s" * (len(recorded) != 1)
        # A small sweep (the ci preset's: a few CPU-minutes) would read "0.0 CPU-hours".
        spent = f"{cpu_hours:.1f} CPU-hours" if cpu_hours >= 0.1 else f"{cpu_hours * 60:.1f} CPU-minutes"
        lines += [
            f"Compute: {spent} in {runs} (each run's own CPU seconds, resumptions included, `timing.cpu_s`; "
            "collecting the data is not counted)"
            + (f"; {unknown} older run{'s' * (unknown != 1)} did not record it." if unknown else "."),
            "",
        ]
    for env_id, settings in table.items():
        demo_settings = sorted({s.split("_p")[0] for s in settings}, key=lambda s: (s.startswith("low"), len(s), s))
        check = checks.get(env_id, {})
        if check.get("message"):  # weak, or refused and kept with --accept_weak_demonstrator
            refused = check.get("verdict") == "refused"
            how = "refused by collect, kept with --accept_weak_demonstrator" if refused else "weak"
            scores = "; normalised scores are fractions of it and can exceed 1"
            scores = "" if "exceed 1" in check["message"] else scores
            lines += [f"## {env_id}", "", f"**Weak demonstrator ({how})**: {check['message']}{scores}.", ""]
        else:
            lines += [f"## {env_id}", ""]
        lines += [
            "| demos | pairs | " + " | ".join(columns) + " |",
            "|---|---|" + "---|" * len(columns),
        ]
        for d in demo_settings:
            counts = sorted({int(s.split("_p")[1]) for s in settings if s.startswith(d + "_p")})
            for p in counts:
                cells = []
                for m in columns:
                    source, shown = f"{d}_p{p}", m
                    if m in ("ml_irl", "bc") or (m == "aihf" and p == 0):
                        source, shown = f"{d}_p0", "ml_irl" if m == "aihf" else m
                    elif m == "pref_rl":
                        source = next((s for s, v in settings.items() if s.endswith(f"_p{p}") and m in v), source)
                    elif m in DATA_FREE:
                        source = next((s for s, v in sorted(settings.items()) if m in v), source)
                    values = settings.get(source, {}).get(shown, [])
                    flag = " †" if values and (env_id, source, shown) in below_null else ""
                    cells.append(_cell(values) + flag if not (m in ("pref_rl", "two_stage") and p == 0) else "n/a")
                lines.append(f"| {d} | {p} | " + " | ".join(cells) + " |")
        lines.append("")
        env_rows = [r for r in rows if r["env_id"] == env_id]
        plot_curves(env_id, env_rows, os.path.join(results, f"curves_{env_id}.png"), columns)
        lines += [f"![learning curves](curves_{env_id}.png)", ""]
    paired = paired_differences(rows)
    if paired:
        lines += [
            "## AIHF minus each baseline, paired by seed",
            "",
            "Same env, seed and data. `final`: the last evaluation; `late`: the mean of the last "
            f"{LATE_EVALUATIONS} evaluations. Mean difference over seeds [each seed's], and in how many seeds "
            "AIHF is ahead.",
            *(
                ["`true_reward` shares only the env and seed: AIHF minus it is the gap to SAC on the env's own reward."]
                if any(r["baseline"] in REFERENCE for r in paired)
                else []
            ),
            "",
            "| env | demos | pairs | baseline | final: AIHF - baseline | ahead | late: AIHF - baseline | ahead |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in paired:
            demos, pairs = r["setting"].split("_p")
            cells = difference_cells(r)
            lines.append(f"| {r['env_id']} | {demos} | {pairs} | {r['baseline']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += null_table_lines(nulls)
    summary = {
        "command": command,
        "paired": paired,
        "null_paired": nulls,
        "demonstrator_checks": checks,
        "cpu_hours": cpu_hours,
        "table": {
            e: {
                s: {m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "seeds": len(v)} for m, v in ms.items()}
                for s, ms in ss.items()
            }
            for e, ss in table.items()
        },
        "runs": [{k: v for k, v in r.items() if k != "history"} for r in rows],
    }
    os.makedirs(results, exist_ok=True)
    _write_atomically(os.path.join(results, "results.json"), json.dumps(summary, indent=1))
    _write_atomically(os.path.join(results, "results.md"), "\n".join(lines) + "\n")
    return summary


def _write_atomically(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
