"""The report of ``aihf bench speed``: medians and spreads over runs, the targets as ratios of
medians, and the markdown table. See :mod:`aihf.bench.speed`.
"""

from __future__ import annotations

import statistics
from typing import Any

def _median_spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (size, variant): median and spread of each run's numbers."""
    table: dict[str, dict[str, Any]] = {}
    for run in runs:
        if "error" in run or run["spec"]["variant"] == "matmul":
            continue
        key = f"{run['spec']['size']}/{run['spec']['variant']}"
        table.setdefault(key, {"runs": []})["runs"].append(run)
    for row in table.values():
        metrics = ("tokens_per_s", "tokens_per_cpu_s", "peak_rss_mib", "peak_gpu_mib", "train_flops_per_s")
        metrics += ("train_flops_per_cpu_s",)
        for metric in (*metrics, "setup_s", "first_batch_cpu_s", "share", "generation_s", "total_s"):
            values = [r[metric] for r in row["runs"] if metric in r]
            if values:
                row[metric] = _median_spread(values)
        row.pop("runs")
    return table


def ratios(table: dict[str, Any], sizes: list[str]) -> list[dict[str, Any]]:
    """The speed targets as ratios of medians (wall and CPU time)."""
    pairs = [
        ("aihf DPO / TRL DPOTrainer (defaults), tokens/s", "aihf_dpo", "trl_dpo", "tokens", ">= 2"),
        (
            "aihf DPO fast (prefix sharing + precomputed ref) / TRL defaults",
            "aihf_dpo_fast",
            "trl_dpo",
            "tokens",
            ">= 2",
        ),
        ("aihf DPO fast / TRL with its speed options", "aihf_dpo_fast", "trl_dpo_fast", "tokens", ">= 1.3"),
        (
            "aihf DPO fast + bf16 / TRL defaults (within tolerance, not equal)",
            "aihf_dpo_fast_bf16",
            "trl_dpo",
            "tokens",
            "(>= 2)",
        ),
        ("aihf DPO packed / aihf DPO", "aihf_dpo_packed", "aihf_dpo", "tokens", "(> 1 to help)"),
        ("aihf DPO prefix sharing / aihf DPO", "aihf_dpo_shared", "aihf_dpo", "tokens", "(> 1 to help)"),
        ("aihf DPO bf16 autocast / fp32", "aihf_dpo_bf16", "aihf_dpo", "tokens", "(> 1 to help)"),
        ("aihf DPO / TRL DPOTrainer, peak RSS", "aihf_dpo", "trl_dpo", "rss", "<= 0.7"),
        ("aihf DPO fast / TRL with speed options, peak RSS", "aihf_dpo_fast", "trl_dpo_fast", "rss", "<= 0.7"),
        ("AIHF-DPO / aihf DPO, per token", "aihf_aihf_dpo", "aihf_dpo", "tokens", ">= 0.9"),
        ("AIHF-DPO / TRL DPO with its sft loss term, per token", "aihf_aihf_dpo", "trl_dpo_sft", "tokens", "(>= 1)"),
        (
            "AIHF-DPO prefix sharing / aihf DPO prefix sharing, per token",
            "aihf_aihf_dpo_fast",
            "aihf_dpo_shared",
            "tokens",
            ">= 0.9",
        ),
        ("aihf generation / plain generate loop, tokens/s", "generate_aihf", "generate_plain", "tokens", ">= 2"),
        ("aihf static-cache loop / plain generate loop", "generate_static", "generate_plain", "tokens", ">= 2"),
        ("aihf compiled decode / plain generate loop", "generate_compiled", "generate_plain", "tokens", ">= 2"),
    ]
    out = []
    for size in sizes:
        for label, a, b, kind, target in pairs:
            ra, rb = table.get(f"{size}/{a}"), table.get(f"{size}/{b}")
            if not ra or not rb:
                continue
            row = {"size": size, "ratio": label, "target": target}
            if kind == "tokens":
                row["wall"] = ra["tokens_per_s"]["median"] / rb["tokens_per_s"]["median"]
                row["cpu"] = ra["tokens_per_cpu_s"]["median"] / rb["tokens_per_cpu_s"]["median"]
            else:
                row["wall"] = ra["peak_rss_mib"]["median"] / rb["peak_rss_mib"]["median"]
            out.append(row)
    return out


def _seconds(row: dict[str, Any]) -> str:
    """`` (generation s / total s)`` medians of a share row, else nothing."""
    if "generation_s" not in row or "total_s" not in row:
        return ""
    return f" ({row['generation_s']['median']:.1f} s / {row['total_s']['median']:.1f} s)"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    gpu = report["settings"].get("device") == "cuda"
    lines = [
        "# aihf bench speed",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {m['cpus']} CPUs, {m['threads']} torch thread(s) per process, load average "
        f"{m['load_before'][0]:.1f} before / {m['load_after'][0]:.1f} after; torch {m['torch']}, transformers "
        f"{m['transformers']}, trl {m['trl']}. {report['settings']['note']}",
        "",
        "## Ratios against the targets (ratio of medians; wall clock and process CPU time)",
        "",
        "| model | ratio | wall | CPU | target |",
        "|---|---|---|---|---|",
    ]
    for r in report["ratios"]:
        cpu = f"{r['cpu']:.2f}" if "cpu" in r else ""
        lines.append(f"| {r['size']} | {r['ratio']} | {r['wall']:.2f} | {cpu} | {r['target']} |")
    peak = report.get("matmul_peak", {})
    peak = peak if "fp32_flops_per_cpu_s" in peak else {}  # the matmul run failed
    lines += ["", "## Per variant (median [min-max] over runs)", ""]
    lines += [
        "| model / variant | tokens/s | tokens/CPU-s | peak RSS MiB | setup s (gen.: 1st batch CPU-s) "
        "| train FLOP/CPU-s | of fp32 peak "
        "| of bf16 peak | gen. share (gen. s / total s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(row, metric, fmt="{:.0f}"):
        if metric not in row:
            return ""
        v = row[metric]
        return f"{fmt.format(v['median'])} [{fmt.format(v['min'])}-{fmt.format(v['max'])}]"

    for key, row in report["variants"].items():
        frac32 = frac16 = ""
        # On a GPU the host's CPU time says nothing of the device's work: fractions of wall-clock FLOP/s.
        per = "per_s" if gpu else "per_cpu_s"
        if f"train_flops_{per}" in row and peak:
            frac32 = f"{row[f'train_flops_{per}']['median'] / peak[f'fp32_flops_{per}']:.0%}"
            frac16 = f"{row[f'train_flops_{per}']['median'] / peak[f'bf16_flops_{per}']:.0%}"
        memory = cell(row, "peak_gpu_mib") + " (GPU)" if "peak_gpu_mib" in row else cell(row, "peak_rss_mib")
        lines.append(
            f"| {key} | {cell(row, 'tokens_per_s')} | {cell(row, 'tokens_per_cpu_s')} | {memory} "
            f"| {cell(row, 'setup_s', '{:.1f}') or cell(row, 'first_batch_cpu_s', '{:.2f}')} "
            f"| {cell(row, 'train_flops_per_cpu_s', '{:.3g}')} | {frac32} "
            f"| {frac16} | {cell(row, 'share', '{:.0%}')}{_seconds(row)} |"
        )
    if peak:
        lines += [
            "",
            f"Measured matmul peak of one process ({'8192x8192 on the GPU' if gpu else '1024x1024'}, best of 8): fp32 "
            f"{peak['fp32_flops_per_cpu_s'] / 1e9:.1f} GFLOP per CPU-second ({peak['fp32_flops_per_s'] / 1e9:.1f} "
            f"GFLOP/s wall), bf16 {peak['bf16_flops_per_cpu_s'] / 1e9:.1f} GFLOP per CPU-second "
            f"({peak['bf16_flops_per_s'] / 1e9:.1f} wall). Training FLOPs count 6N per trained token and 2N per "
            "reference-scored token (N: parameters in matrix products; attention scores left out), on the padded-"
            "equivalent token count, so prefix sharing's are effective FLOPs; the fractions use CPU time, which a "
            "shared machine distorts less than wall time.",
            "",
            "Tokens are the non-pad tokens of the padded batch (prompt counted once per answer), identical for every "
            "variant at a given step; setup is trainer construction (tokenising; precomputing reference log-probs "
            "over the whole training set when that option is on), not included in tokens/s.",
        ]
    lines += ["", "Variants: " + "; ".join(f"`{k}`: {v}" for k, v in report["settings"]["variants"].items()), ""]
    return "\n".join(lines)


VARIANT_NOTES = {
    "trl_dpo": "TRL DPOTrainer, its defaults (fp32, no gradient checkpointing, as aihf)",
    "trl_dpo_fast": "TRL with precompute_ref_log_probs and padding_free (TRL 1.16 warns and pads anyway)",
    "trl_dpo_sft": "TRL DPOTrainer with loss_type [sigmoid, sft]: DPO plus the chosen answers' NLL, no extra pass",
    "aihf_dpo": "AIHFTrainer demo_weight=0 (DPO mode), defaults",
    "aihf_dpo_packed": "DPO mode with padding_free=True",
    "aihf_dpo_shared": "DPO mode with prefix_sharing=True (packed, each prompt run once)",
    "aihf_dpo_fast": "DPO mode with prefix_sharing and precompute_ref_log_probs",
    "aihf_dpo_bf16": "DPO mode with bf16=True (autocast; results within tolerance, not equal)",
    "aihf_dpo_fast_bf16": "aihf_dpo_fast with bf16=True",
    "aihf_aihf_dpo": "AIHF-DPO: the pairs plus their chosen answers as demonstrations",
    "aihf_aihf_dpo_fast": "AIHF-DPO with prefix_sharing",
    "generate_aihf": "aihf's self-play sampler (HFGenerator), batch 8",
    "generate_static": "HFGenerator(backend='static'): aihf's decode loop on a static KV cache, batch 8",
    "generate_compiled": "HFGenerator(backend='compiled'): that loop, decode step torch.compile'd, batch 8",
    "generate_plain": "a plain model.generate loop, batch 8",
    "share_self_play": "online self-play AIHF: generation time / training time",
    "share_aihf_rl": "AIHF-RL: generation time / training time",
    "share_self_play_compiled": "share_self_play with the compiled decode backend (compilation included)",
    "share_aihf_rl_compiled": "share_aihf_rl with generation_backend='compiled' (compilation included)",
}
