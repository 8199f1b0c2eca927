"""Summarise the Hopper-v5 diagnosis runs (benchmarks/hopper/diagnose.sh) beside the cpu table's
ML-IRL and null-reward runs: final normalised return, episode length and distance moved (what the
policy does: stand, fall or hop), and the balance of the two reward terms (gradient-norm ratio
pref/demo at the first and the last logged round).

    python benchmarks/hopper/report.py   # writes benchmarks/results/control-hopper/{diagnosis.json,diagnosis.md}
"""

import glob
import json
import os

import numpy as np

ROOT = "benchmarks/results/control-hopper"
TABLE = "benchmarks/results/control/run_results/Hopper-v5"


def runs():
    for path in sorted(glob.glob(f"{ROOT}/*/run_results/Hopper-v5/*.json")):
        yield path.split("/")[3], path
    for method in ("true_reward", "ml_irl", "null_constant"):
        for path in sorted(glob.glob(f"{TABLE}/expert1_p0__{method}__seed*.json")):
            yield f"cpu table: {method}", path


def summary(path):
    d = json.load(open(path))
    h = [e for e in d["history"] if "normalized_return" in e]
    ratios = [e["reward/grad_norm_pref"] / e["reward/grad_norm_demo"] for e in d["history"]
              if e.get("reward/grad_norm_demo") and e.get("reward/grad_norm_pref") is not None]
    return {
        "seed": d["seed"],
        "final": d["final"]["normalized_return"],
        "last3": float(np.mean([e["normalized_return"] for e in h[-3:]])),
        "episode_length": d["final"].get("episode_length_mean"),
        "x_distance": d["final"].get("x_distance_mean"),
        "grad_ratio_first": ratios[0] if ratios else None,
        "grad_ratio_last": ratios[-1] if ratios else None,
        "reward_expert": d["final"].get("demo/reward_expert"),
        "reward_policy": d["final"].get("demo/reward_policy"),
        "pref_loss": [round(e["loss/pref"], 2) for e in h if "loss/pref" in e],
        "curve": [round(e["normalized_return"], 2) for e in h],
    }


def fmt(v, spec=".2f"):
    return "–" if v is None else format(v, spec)


def main():
    rows = {}
    for variant, path in runs():
        rows.setdefault(variant, []).append(summary(path))
    lines = [
        "# Hopper-v5 diagnosis (issue 23, item 3)",
        "",
        "Command: `bash benchmarks/hopper/diagnose.sh 1 && python benchmarks/hopper/report.py`. AIHF, 1 expert",
        "demonstration, 100 pairs, cpu preset (70k env steps), final evaluation over 10 episodes; the cpu",
        "table's true-reward, ML-IRL and null-constant runs (final over 5/10 episodes, no lengths logged then) beside them.",
        "A 1000-step episode that moved ~0 m is a policy standing still (~0.48 normalised from the healthy reward).",
        "r(expert), r(policy): the learned reward (bound 10) on demonstration and policy states at the end.",
        "",
        "| variant | seed | final | last 3 evals | episode length | distance (m) | grad pref/demo first | last | r(expert) | r(policy) | BT loss by eval | curve |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, items in rows.items():
        for r in sorted(items, key=lambda r: r["seed"]):
            lines.append(
                f"| {variant} | {r['seed']} | {r['final']:.2f} | {r['last3']:.2f} | {fmt(r['episode_length'], '.0f')} | "
                f"{fmt(r['x_distance'])} | {fmt(r['grad_ratio_first'], '.2g')} | {fmt(r['grad_ratio_last'], '.2g')} | "
                f"{fmt(r['reward_expert'], '.1f')} | {fmt(r['reward_policy'], '.1f')} | {' '.join(map(str, r['pref_loss']))} | "
                f"{' '.join(map(str, r['curve']))} |"
            )
        finals = [r["final"] for r in items]
        lines.append(f"| **{variant}: mean ± std** | {len(items)} | {np.mean(finals):.2f} ± {np.std(finals):.2f} | | | | | | | | | |")
    os.makedirs(ROOT, exist_ok=True)
    json.dump(rows, open(f"{ROOT}/diagnosis.json", "w"), indent=1)
    open(f"{ROOT}/diagnosis.md", "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
