"""Wall time per phase of AIHF-RL (generation, policy step, reward step) on a real small model.

Loads a GGUF checkpoint through ``aihf.llm.loading.load_policy`` (dequantised to float32), trains
LoRA adapters of the policy and of the reward model with :class:`aihf.llm.AIHFRLTrainer` for a
few rounds on a tiny synthetic instruction set, and records the seconds each round spends in each
phase (the trainer's own ``timings``: ``generation`` is ``model.generate``; ``policy_step`` is the
policy, reference and reward forward passes on the samples plus the update; ``reward_step`` is
the reward model's forward and backward on pairs, demonstrations and their samples).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/rl_phases.py \\
        --gguf /path/to/SmolLM2-135M-Instruct.Q4_1.gguf --rounds 3

Writes ``rl_phases.json`` and ``rl_phases.md`` to ``--out``. Timings on a shared machine are noisy:
read them as proportions, not as speeds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time

import torch

TOPICS = ["apples", "rain", "the moon", "bicycles", "tea", "rivers", "owls", "bread"]


def make_data(n: int):
    """Short prompts with short answers; the preferred answer is on topic and polite."""
    demos, prefs = [], []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        prompt = f"Write one short sentence about {topic}."
        good = f" {topic.capitalize()} are lovely in the morning."
        bad = " I do not want to talk about that."
        demos.append({"prompt": prompt, "completion": good})
        prefs.append({"prompt": prompt, "chosen": good, "rejected": bad})
    return demos, prefs


def _command() -> str:
    """This run's command line, with its thread count and niceness as a shell would set them."""
    prefix = [f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"] if "OMP_NUM_THREADS" in os.environ else []
    if os.nice(0):
        prefix += ["nice", "-n", str(os.nice(0))]
    return " ".join([*prefix, *(shlex.quote(a) for a in ["python", *sys.argv])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", required=True, help="GGUF file of the policy (dequantised on load)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per policy step")
    parser.add_argument("--num_generations", type=int, default=2)
    parser.add_argument("--max_new_tokens", type=int, default=16)
    parser.add_argument("--reward_batch_size", type=int, default=4)
    parser.add_argument("--lora_r", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results/rl_phases")
    args = parser.parse_args(argv)

    from peft import LoraConfig

    from aihf.llm import AIHFRLConfig, AIHFRLTrainer
    from aihf.llm.loading import load_policy

    load_avg_before = os.getloadavg()
    start = time.perf_counter()
    model, tokenizer = load_policy(args.gguf)
    load_seconds = time.perf_counter() - start

    demos, prefs = make_data(16)
    with tempfile.TemporaryDirectory() as scratch:
        config = AIHFRLConfig(
            output_dir=scratch,
            num_rounds=args.rounds,
            per_device_train_batch_size=args.prompts,
            num_generations=args.num_generations,
            max_new_tokens=args.max_new_tokens,
            reward_batch_size=args.reward_batch_size,
            max_length=96,
            learning_rate=1e-4,
            reward_learning_rate=1e-4,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            seed=0,
        )
        lora = dict(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules="all-linear")
        start = time.perf_counter()
        trainer = AIHFRLTrainer(
            model,
            args=config,
            demonstrations=demos,
            preferences=prefs,
            processing_class=tokenizer,
            peft_config=LoraConfig(task_type="CAUSAL_LM", **lora),
            reward_peft_config=LoraConfig(task_type="SEQ_CLS", **lora),
        )
        setup_seconds = time.perf_counter() - start
        phases = ("generation", "policy_step", "reward_step")
        rounds = []
        for _ in range(args.rounds):
            before = {p: trainer.timings[p] for p in phases}
            start = time.perf_counter()
            metrics = trainer.run_round()
            total = time.perf_counter() - start
            row = {p: trainer.timings[p] - before[p] for p in phases}
            row.update(
                round=int(metrics["round"]),
                total=total,
                mean_completion_tokens=metrics["completions/mean_length"],
            )
            rounds.append(row)
            print(json.dumps(row), flush=True)

    policy_params = sum(p.numel() for p in trainer.policy.parameters())
    later = rounds[1:] or rounds  # the first round also warms up allocators and kernels
    mean = {p: sum(r[p] for r in later) / len(later) for p in (*phases, "total")}
    result = {
        "command": _command(),
        "model": os.path.basename(args.gguf),
        "policy_parameters": policy_params,
        "settings": vars(args) | {"max_length": 96, "lora_on": "policy and reward model (all linear layers)"},
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_before": load_avg_before,
            "load_average_after": os.getloadavg(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "shared": "yes: other jobs ran on the same 2 cores, so these timings are noisy",
        },
        "load_seconds": load_seconds,
        "trainer_setup_seconds": setup_seconds,
        "rounds": rounds,
        "mean_after_first_round": mean,
        "share_after_first_round": {p: mean[p] / mean["total"] for p in phases},
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "rl_phases.json"), "w") as f:
        json.dump(result, f, indent=2)
    lines = [
        f"# AIHF-RL wall time per phase: {result['model']}, LoRA r={args.lora_r}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"{args.prompts} prompts x {args.num_generations} samples per policy step, up to {args.max_new_tokens} new "
        f"tokens, {args.reward_batch_size} pairs per reward step, one policy and one reward step per round; "
        f"CPU, {result['machine']['torch_threads']} torch thread(s). The machine was shared with other jobs "
        f"(load average {load_avg_before[0]:.1f} before, {result['machine']['load_average_after'][0]:.1f} after, "
        f"on {os.cpu_count()} cores), so the timings are noisy: read the proportions, not the speeds.",
        "",
        f"Loading the GGUF file (dequantised): {load_seconds:.1f} s; trainer setup (data, reward model, "
        f"LoRA): {setup_seconds:.1f} s.",
        "",
        "| round | generation (s) | policy step (s) | reward step (s) | round total (s) | mean sample tokens |",
        "|---|---|---|---|---|---|",
    ]
    for r in rounds:
        lines.append(
            f"| {r['round']} | {r['generation']:.2f} | {r['policy_step']:.2f} | {r['reward_step']:.2f} | "
            f"{r['total']:.2f} | {r['mean_completion_tokens']:.1f} |"
        )
    share = result["share_after_first_round"]
    lines += [
        "",
        "Share of the round after the first: "
        + ", ".join(f"{p.replace('_', ' ')} {100 * share[p]:.0f}%" for p in phases)
        + ".",
        "",
    ]
    with open(os.path.join(args.out, "rl_phases.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
