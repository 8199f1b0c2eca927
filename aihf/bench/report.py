"""The report of ``aihf bench llm``: the finished runs aggregated into ``results.json``, ``results.md``
(the matched-KL comparison first, then the KL-capped final points) and PNG plots."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from .evaluation import held_out_pairs
from .frontier import matched_rows, paired_at_kl
from .methods import AIHF_VARIANTS, BASELINES, MATCHED_BASELINES, METHODS, REFERENCE_METHOD, method_spec
from .settings import (
    SWEEP_ONLY,
    BenchArguments,
    ablation_methods,
    all_runs,
    budgets,
    kl_levels,
    method_names,
    result_path,
    sweep_command,
)
from .stats import mean, mean_ci


def pair_units(accuracies: list[float], num_pairs: int) -> list[float]:
    """Each run's held-out pairs as 0/1 units (1: ranked right), rebuilt from its accuracy over ``num_pairs``
    pairs, so that the interval is over (seed, pair) units as the gold's is over (seed, prompt) units."""
    units = []
    for accuracy in accuracies:
        right = round(accuracy * num_pairs)
        units += [1.0] * right + [0.0] * (num_pairs - right)
    return units


def _row(method: str, budget: int, runs: list[dict], results: dict, args: BenchArguments, card: dict, num_pairs):
    """One row of the KL-capped table: the runs' final (selected) points on the test prompts."""
    r_base, r_demo = card["R_base_test"], card["R_demo_test"]
    units = [p for r in runs for p in r["test"]["per_prompt"]]
    gold = mean_ci([mean(p["gold"]) for p in units])
    wins_ref = []
    for r in runs:
        # Same budget and seed; a method without preferences meets SFT -> DPO at every budget.
        ref_budgets = [budget] if budget else budgets(args)
        for other in filter(None, (results.get((REFERENCE_METHOD, b, r["seed"])) for b in ref_budgets)):
            for p, q in zip(r["test"]["per_prompt"], other["test"]["per_prompt"]):
                pairs = list(zip(p["gold"], q["gold"]))
                wins_ref.append(sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs))
    scale = r_demo - r_base
    cpus = [r["cpu_seconds"] for r in runs if "cpu_seconds" in r]
    accuracies = [r["reward_pair_accuracy"] for r in runs if r.get("reward_pair_accuracy") is not None]
    return {
        "method": method,
        "budget": budget,
        "seeds": len(runs),
        "gold": gold,
        "gold_normalised": ((gold[0] - r_base) / scale, gold[1] / abs(scale)) if scale else None,
        "kl": mean_ci([mean(p["kl"]) for p in units]),
        "win_vs_base": mean_ci([p["win_vs_base"] for p in units]),
        "win_vs_sft_then_dpo": mean_ci(wins_ref) if wins_ref else None,
        "distinct_2": mean_ci([r["test"]["distinct_2"] for r in runs]),
        "repetition_2": mean_ci([r["test"]["repetition_2"] for r in runs]),
        "wall_seconds": mean_ci([r["wall_seconds"] for r in runs]),
        "cpu_seconds": mean_ci(cpus) if cpus else None,
        "reward_pair_accuracy": mean_ci(pair_units(accuracies, num_pairs)) if accuracies else None,
        # Per run, in seed order: the reward model's Spearman correlation with the gold on held-out base samples.
        "reward_spearman": [r["reward_spearman"] for r in runs if r.get("reward_spearman") is not None] or None,
        "selected": [r["selected"] for r in runs],
        "within_kl_cap": [r["selected_within_kl_cap"] for r in runs],
    }


def aggregate(args: BenchArguments, data_dir: str) -> dict:
    """Per (method, budget): gold at each KL level of ``--kl_levels`` read on each run's frontier
    (:mod:`aihf.bench.frontier`), and the AIHF variants minus each baseline there, paired; then the
    final points' test metrics with 95 % CIs over (seed, prompt) units; win rates against the base
    model's samples and against SFT -> DPO's (same budget and seed); the reward models' held-out
    pair accuracy with its CI over (seed, held-out pair) units; and the ablation's rows."""
    from ..tasks.sentiment.data import read_jsonl

    with open(os.path.join(data_dir, "card.json")) as f:
        card = json.load(f)
    r_base, r_demo = card["R_base_test"], card["R_demo_test"]
    results, ignored = {}, 0
    for method, budget, seed in all_runs(args):
        path = result_path(args, method, budget, seed)
        if os.path.isfile(path):
            with open(path) as f:
                result = json.load(f)
            # A run on other task data is not comparable (files written before the key existed count).
            if card.get("config") is not None and result.get("data_key", card["config"]) != card["config"]:
                ignored += 1
                continue
            results[(method, budget, seed)] = result
    num_pairs = None
    if any(r.get("reward_pair_accuracy") is not None for r in results.values()):
        num_pairs = len(held_out_pairs(read_jsonl(os.path.join(data_dir, "references_validation.jsonl"))))

    def runs_of(method: str, budget: int) -> list[dict]:
        return [r for (m, b, _), r in sorted(results.items()) if m == method and b == budget]

    main_rows = [(m, b) for m in method_names(args) for b in (budgets(args) if METHODS[m].uses_preferences else [0])]
    smallest = budgets(args)[0]
    ablation = [(m, smallest) for m in ablation_methods(args)]
    # The ablation table shows each variant's default weights (w_D = w_P = 1) beside the others.
    defaults = list(dict.fromkeys((method_spec(m)[0], smallest) for m, _ in ablation))
    grouped = [key for d in defaults for key in [d] + [a for a in ablation if method_spec(a[0])[0] == d[0]]]
    rows = [_row(m, b, runs, results, args, card, num_pairs) for m, b in main_rows if (runs := runs_of(m, b))]
    ablation_rows = [_row(m, b, runs, results, args, card, num_pairs) for m, b in grouped if (runs := runs_of(m, b))]
    levels = kl_levels(args)
    # Result files of older versions have no frontier: they count in the capped table only.
    with_frontier = {key: [r for r in runs_of(*key) if "frontier" in r] for key in main_rows + defaults + ablation}
    matched = matched_rows({k: v for k, v in with_frontier.items() if v and k in main_rows}, levels, r_base, r_demo)
    matched_ablation = matched_rows({k: with_frontier[k] for k in grouped if with_frontier[k]}, levels, r_base, r_demo)
    pairs = []
    for budget in budgets(args):
        for method in AIHF_VARIANTS:
            for baseline in MATCHED_BASELINES:
                other = budget if METHODS[baseline].uses_preferences else 0
                seed_runs = [
                    (results[(method, budget, seed)], results[(baseline, other, seed)])
                    for (m, b, seed) in sorted(results)
                    if m == method and b == budget and (baseline, other, seed) in results
                ]
                seed_runs = [(a, b) for a, b in seed_runs if "frontier" in a and "frontier" in b]
                if seed_runs:
                    pairs.append((method, baseline, budget, seed_runs))
    for_levels = "; gold at a KL level is read on each run's frontier (linear interpolation at the first crossing)"
    return {
        "command": sweep_command(args),
        "settings": {k: v for k, v in asdict(args).items() if k not in SWEEP_ONLY},
        "R_base_test": r_base,
        "R_demo_test": r_demo,
        "data_card": card,
        "kl_levels": levels,
        "matched": matched,
        "matched_paired": paired_at_kl(pairs, levels, r_base, r_demo),
        "rows": rows,
        "paired": paired_differences(results, budgets(args)),
        "ablation": {"budget": smallest, "rows": ablation_rows, "matched": matched_ablation} if ablation else None,
        "frontiers": {
            f"{m}__{b}": [
                {
                    "seed": r["seed"],
                    "frontier": [{k: p[k] for k in ("steps", "stage", "kl", "gold")} for p in r["frontier"]],
                }
                for r in runs
            ]
            for (m, b), runs in with_frontier.items()
            if runs
        },
        "runs_finished": len(results),
        "runs_ignored": ignored,
        "runs_total": len(all_runs(args)),
        "held_out_pairs": num_pairs,
        "ci": "normal 95 % interval over (seed, test prompt) units; per-run values over seeds for distinct-2, "
        "repetition and wall time"
        + (f"; over (seed, held-out pair) units for RM pair acc ({num_pairs} pairs per seed)" if num_pairs else "")
        + for_levels,
    }


def paired_differences(results: dict[tuple[str, int, int], dict], budget_list: list[int]) -> list[dict]:
    """Each AIHF variant minus each baseline at the same preference budget: the gold difference
    with its normal 95 % interval over (seed, test prompt) units, paired (same seeds, same prompts;
    a prompt's value is the mean over its samples), and both methods' mean KL on those seeds."""
    rows = []
    for budget in budget_list:
        for method in AIHF_VARIANTS:
            for baseline in BASELINES:
                seeds = sorted(
                    seed for (m, b, seed) in results if m == method and b == budget and (baseline, b, seed) in results
                )
                if not seeds:
                    continue
                diffs, kls = [], {method: [], baseline: []}
                for seed in seeds:
                    ours, theirs = results[(method, budget, seed)], results[(baseline, budget, seed)]
                    for p, q in zip(ours["test"]["per_prompt"], theirs["test"]["per_prompt"]):
                        diffs.append(mean(p["gold"]) - mean(q["gold"]))
                        kls[method].append(mean(p["kl"]))
                        kls[baseline].append(mean(q["kl"]))
                rows.append(
                    {
                        "budget": budget,
                        "method": method,
                        "baseline": baseline,
                        "seeds": len(seeds),
                        "gold_difference": mean_ci(diffs),
                        "kl": mean(kls[method]),
                        "baseline_kl": mean(kls[baseline]),
                    }
                )
    return rows


def _fmt(ci: tuple[float, float] | None, digits: int = 3) -> str:
    if ci is None:
        return "-"
    return f"{ci[0]:.{digits}f} ± {ci[1]:.{digits}f}"


def _at_level(level: dict) -> str:
    """A matched-KL cell: gold ± CI (normalised), and how many seeds' frontiers did not reach the level."""
    if level["gold"] is None:
        return f"not reached ({level['not_reached']})"
    missing = f"; not reached: {level['not_reached']}" if level["not_reached"] else ""
    return f"{_fmt(level['gold'])} ({level['gold_normalised'][0]:.2f}{missing})"


def matched_table(rows: list[dict], levels: list[float]) -> list[str]:
    head = " | ".join(f"gold at KL {lv:g} (normalised)" for lv in levels)
    lines = [f"| method | prefs | seeds | {head} |", "|---|---|---|" + "---|" * len(levels)]
    for r in rows:
        cells = " | ".join(_at_level(level) for level in r["levels"])
        lines.append(f"| {r['method']} | {r['budget'] or '-'} | {r['seeds']} | {cells} |")
    return lines


def paired_table(rows: list[dict], levels: list[float]) -> list[str]:
    """One line per (budget, variant, baseline), one column per KL level."""
    head = " | ".join(f"at KL {lv:g}" for lv in levels)
    lines = [f"| prefs | AIHF variant | baseline | {head} |", "|---|---|---|" + "---|" * len(levels)]
    by_key: dict[tuple, dict[float, dict]] = {}
    for r in rows:
        by_key.setdefault((r["budget"], r["method"], r["baseline"]), {})[r["kl"]] = r
    for (budget, method, baseline), at in by_key.items():
        cells = []
        for level in levels:
            r = at[level]
            missing = f"not reached {r['method_not_reached']} / {r['baseline_not_reached']}"
            if r["gold_difference"] is None:
                cells.append(missing)
            else:
                cell = f"{_fmt(r['gold_difference'])} ({r['normalised_difference'][0]:+.2f})"
                cells.append(cell + (f"; {missing}" if r["method_not_reached"] or r["baseline_not_reached"] else ""))
        lines.append(f"| {budget} | {method} | {baseline} | {' | '.join(cells)} |")
    return lines


def _spearman_cell(values: list[float] | None) -> str:
    if not values:
        return ""
    return f"{mean(values):.2f} ({', '.join(f'{v:.2f}' for v in values)})"


def _capped_table(rows: list[dict]) -> list[str]:
    lines = [
        "| method | prefs | seeds | gold | normalised | KL (nats) | win vs base | win vs SFT->DPO | distinct-2 | "
        "rep-2 | RM pair acc | RM Spearman (per seed) | wall s | CPU s | selected |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        selected = "; ".join(
            ", ".join(f"{k}={v:g}" for k, v in hp.items()) + ("" if within else " (no grid point under the KL cap)")
            for hp, within in zip(r["selected"], r["within_kl_cap"])
        )
        cpu = f"{r['cpu_seconds'][0]:.0f}" if r.get("cpu_seconds") else "-"  # older result files lack it
        lines.append(
            f"| {r['method']} | {r['budget'] or '-'} | {r['seeds']} | {_fmt(r['gold'])} | "
            f"{_fmt(r['gold_normalised'], 2)} | {_fmt(r['kl'], 2)} | {_fmt(r['win_vs_base'], 2)} | "
            f"{_fmt(r['win_vs_sft_then_dpo'], 2)} | {_fmt(r['distinct_2'], 2)} | {_fmt(r['repetition_2'], 3)} | "
            f"{_fmt(r.get('reward_pair_accuracy'), 2)} | {_spearman_cell(r.get('reward_spearman'))} | "
            f"{r['wall_seconds'][0]:.0f} | {cpu} | {selected} |"
        )
    return lines


def markdown(report: dict) -> str:
    """``results.md``: the matched-KL comparison (gold at each KL level, then the paired differences
    there), the KL-capped final points and their paired differences, and the ablation."""
    levels = report.get("kl_levels") or []
    lines = [
        f"Command: `{report['command']}`  ",
        f"R_base (test) = {report['R_base_test']:.4f}, R_demo (best-of-n, test) = {report['R_demo_test']:.4f}; "
        f"{report['runs_finished']}/{report['runs_total']} runs; {report['ci']}.",
        "",
    ]
    if report.get("matched"):
        lines += [
            "**Gold at matched KL** (each run's test frontier along training read at each KL level; "
            "'not reached: n' = seeds whose frontier stays below the level, left out of the mean):",
            "",
            *matched_table(report["matched"], levels),
        ]
    if report.get("matched_paired"):
        lines += [
            "",
            "**AIHF variants minus baselines at matched KL**, paired by seed and test prompt: gold difference with "
            "its 95 % interval (normalised by R_demo - R_base), over the seeds where both reach the level; "
            "'not reached a / b' = seeds of the variant / the baseline that do not:",
            "",
            *paired_table(report["matched_paired"], levels),
        ]
    lines += ["", "**The final points, tuned under the KL cap** (the grid point chosen on validation):", ""]
    lines += _capped_table(report["rows"])
    if report.get("paired"):
        lines += [
            "",
            "AIHF variants minus baselines at their final points, paired by seed and test prompt (gold difference, "
            "95 % interval; an interval clear of 0 is a resolved difference; at each method's own KL):",
            "",
            "| prefs | AIHF variant | baseline | seeds | gold difference | KL variant / baseline |",
            "|---|---|---|---|---|---|",
        ]
        for r in report["paired"]:
            lines.append(
                f"| {r['budget']} | {r['method']} | {r['baseline']} | {r['seeds']} | "
                f"{_fmt(r['gold_difference'])} | {r['kl']:.2f} / {r['baseline_kl']:.2f} |"
            )
    ablation = report.get("ablation")
    if ablation and ablation["rows"]:
        lines += [
            "",
            f"**Ablation** at {ablation['budget']} pairs: the AIHF variants with other (demo_weight, pref_weight) "
            "(run names _wd<w_D>_wp<w_P>; without a suffix: 1, 1), at matched KL and at their final points:",
            "",
            *matched_table(ablation["matched"], levels),
            "",
            *_capped_table(ablation["rows"]),
        ]
    return "\n".join(lines) + "\n"


def plot(report: dict, output_dir: str) -> list[str]:
    """``gold_vs_preferences.png``, ``gold_vs_kl.png`` (the final points) and the frontier plots
    (:func:`plot_frontiers`); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    methods = list(dict.fromkeys(r["method"] for r in report["rows"]))
    pref_budgets = sorted({r["budget"] for r in report["rows"] if r["budget"]})
    for m in methods:
        rows = sorted((r for r in report["rows"] if r["method"] == m), key=lambda r: r["budget"])
        if rows[0]["budget"] == 0 and pref_budgets:  # no preferences: a flat line across the sweep
            x, y, e = pref_budgets, [rows[0]["gold"][0]] * len(pref_budgets), [rows[0]["gold"][1]] * len(pref_budgets)
            style = "--"
        else:
            x, y, e = [r["budget"] for r in rows], [r["gold"][0] for r in rows], [r["gold"][1] for r in rows]
            style = "-o"
        ax.errorbar(x, y, yerr=e, fmt=style, capsize=3, label=m)
    ax.axhline(report["R_base_test"], color="grey", lw=1, ls=":", label="base")
    ax.axhline(report["R_demo_test"], color="black", lw=1, ls=":", label="demonstrator")
    if pref_budgets:
        ax.set_xscale("log")
        ax.set_xticks(pref_budgets, [str(b) for b in pref_budgets])
        ax.minorticks_off()
    ax.set_xlabel("preference pairs")
    ax.set_ylabel("mean gold reward (test)")
    ax.set_title(report["command"], fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(output_dir, "gold_vs_preferences.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        rows = [r for r in report["rows"] if r["method"] == m]
        ax.errorbar(
            [r["kl"][0] for r in rows],
            [r["gold"][0] for r in rows],
            xerr=[r["kl"][1] for r in rows],
            yerr=[r["gold"][1] for r in rows],
            fmt="o",
            capsize=2,
            label=m,
        )
        for r in rows:
            if r["budget"]:
                ax.annotate(str(r["budget"]), (r["kl"][0], r["gold"][0]), fontsize=6)
    ax.scatter([0], [report["R_base_test"]], marker="x", color="grey", label="base")
    ax.set_xlabel("KL to base (nats per continuation, test)")
    ax.set_ylabel("mean gold reward (test)")
    ax.set_title(report["command"], fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(output_dir, "gold_vs_kl.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths + plot_frontiers(report, output_dir)


def plot_frontiers(report: dict, output_dir: str) -> list[str]:
    """``frontier_<budget>.png`` per preference budget: test gold against KL along training, one colour
    per method (methods without pairs in every plot), each seed's frontier a thin line, and the mean
    gold at each KL level (over the seeds that reach it) marked with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frontiers = report.get("frontiers") or {}
    matched = {(r["method"], r["budget"]): r for r in report.get("matched") or []}
    pref_budgets = sorted({b for _, b in matched if b}) or [0]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    methods = list(dict.fromkeys(m for m, _ in matched))
    paths = []
    for budget in pref_budgets:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, method in enumerate(methods):
            key = (method, budget) if (method, budget) in matched else (method, 0)
            if key not in matched:
                continue
            colour = colours[i % len(colours)]
            for run in frontiers.get(f"{key[0]}__{key[1]}", []):
                points = run["frontier"]
                ax.plot([p["kl"] for p in points], [p["gold"] for p in points], color=colour, lw=0.7, alpha=0.6)
            levels = [lv for lv in matched[key]["levels"] if lv["gold"] is not None]
            shift = 0.04 * (i - (len(methods) - 1) / 2)  # side by side at each level, not on top of each other
            ax.errorbar(
                [lv["kl"] + shift for lv in levels],
                [lv["gold"][0] for lv in levels],
                yerr=[lv["gold"][1] for lv in levels],
                fmt="o",
                color=colour,
                capsize=2,
                label=method,
            )
        for level in report.get("kl_levels") or []:
            ax.axvline(level, color="grey", lw=0.5, ls=":")
        ax.axhline(report["R_base_test"], color="grey", lw=1, ls="--", label="base")
        ax.axhline(report["R_demo_test"], color="black", lw=1, ls="--", label="demonstrator")
        ax.set_xlabel("KL to base (nats per continuation, test)")
        ax.set_ylabel("mean gold reward (test)")
        ax.set_title(f"{budget} preference pairs: frontiers along training\n{report['command']}", fontsize=7)
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        paths.append(os.path.join(output_dir, f"frontier_{budget}.png"))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def write_report(args: BenchArguments, data_dir: str) -> dict:
    report = aggregate(args, data_dir)
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(report, f, indent=1)
    table = markdown(report)
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(table)
    plots = plot(report, args.output_dir) if report["rows"] else []
    print("\n" + table)
    if report["runs_ignored"]:
        print(
            f"Ignored {report['runs_ignored']} result file(s) in {os.path.join(args.output_dir, 'run_results')} "
            f"whose task data differ from {data_dir}'s (trained on other data)"
        )
    print(f"Results: {os.path.join(args.output_dir, 'results.md')} (+ results.json)")
    for path in plots:
        print(f"Plot: {path}")
    return report
