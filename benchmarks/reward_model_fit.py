"""How well can the LLM benchmark's reward model learn the gold, offline, from each kind of data?

A reward model built from the sentiment task's 1.3M base (score head, mean read-out, the trainer's
defaults) is fitted with AIHF-RL's reward objective on the quick preset's data, with no policy in the
loop: preference pairs alone (Bradley-Terry), demonstrations against base samples of their prompts
alone (the logistic ML-IRL term), or both (AIHF's objective), each for a number of steps at learning
rate 1e-3 (the benchmark's), 16 pairs and/or 16 demonstrations (2 base samples each) per step. Reported:
the Spearman correlation of its scores with the gold over the held-out base samples (validation and
test references) and its accuracy on the held-out pairs. Writes results.json and results.md.

    python benchmarks/reward_model_fit.py [--data DIR] [--output_dir DIR] [--seeds 0,1,2]

Each seed draws its own base samples, batches and score-head initialisation.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from aihf.bench.evaluation import held_out_pairs, held_out_samples, spearman
from aihf.llm import AIHFRLConfig, AIHFRLTrainer
from aihf.tasks.sentiment.base import base_model_dir
from aihf.tasks.sentiment.sampling import sample_continuations

SETTINGS = [("pairs", 32), ("pairs", 100), ("pairs", 200), ("demonstrations", 100), ("both", 100)]


def fit(data: str, signal: str, steps: int, seed: int, out: str) -> dict:
    def read(name):
        with open(os.path.join(data, name)) as f:
            return [json.loads(line) for line in f]

    demos, prefs = read("demonstrations.jsonl"), read("preferences.jsonl")
    refs = read("references_validation.jsonl")
    evaluation = held_out_samples(refs) + held_out_samples(read("references_test.jsonl"))
    base = base_model_dir()
    tok = AutoTokenizer.from_pretrained(base)
    policy = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    torch.manual_seed(seed)
    use_pairs, use_demos = signal in ("pairs", "both"), signal in ("demonstrations", "both")
    args = AIHFRLConfig(
        output_dir=out,
        overwrite_output_dir=True,
        reward_batch_size=16,
        reward_learning_rate=1e-3,
        demo_weight=1.0 if use_demos else 0.0,
        pref_weight=1.0 if use_pairs else 0.0,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        max_new_tokens=32,
        seed=seed,
    )
    trainer = AIHFRLTrainer(
        policy,
        args=args,
        demonstrations=demos if use_demos else None,
        preferences=prefs if use_pairs else None,
        eval_preferences=held_out_pairs(refs),
        processing_class=tok,
    )
    samples = None
    if use_demos:  # the base model's samples on the demonstrations' prompts: what the first round would contrast
        prompts = list(trainer.demonstrations["prompt_ids"])
        samples = sample_continuations(
            policy, prompts, num_samples=2, length=32, seed=seed, pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
    rng, start = random.Random(seed), time.process_time()
    for _ in range(steps):
        chosen = rng.sample(range(len(samples)), 16) if use_demos else []
        trainer.reward_step(chosen, [samples[i] for i in chosen])
    scores = trainer.score([r["prompt"] for r in evaluation], [r["completion"] for r in evaluation])
    held = trainer.evaluate_reward()
    return {
        "signal": signal,
        "steps": steps,
        "spearman": spearman(scores, [r["gold"] for r in evaluation]),
        "held_out_pair_accuracy": held["reward/eval_accuracy"],
        "held_out_samples": len(evaluation),
        "held_out_pairs": len(held_out_pairs(refs)),
        "cpu_seconds": round(time.process_time() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="benchmarks/results/llm/quick/data")
    parser.add_argument("--output_dir", default="benchmarks/results/reward_model_fit")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    os.makedirs(args.output_dir, exist_ok=True)
    rows = []
    for signal, steps in SETTINGS:
        for seed in seeds:
            rows.append({"seed": seed, **fit(args.data, signal, steps, seed, os.path.join(args.output_dir, "tmp"))})
            print(json.dumps(rows[-1]), flush=True)
    command = "python benchmarks/reward_model_fit.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump({"command": command.strip(), "data": args.data, "seeds": seeds, "rows": rows}, f, indent=1)
    lines = [
        f"Command: `{command.strip()}` (data: `{args.data}`, seeds {args.seeds})",
        "",
        "| training signal | reward steps | Spearman with gold, mean (per seed) | held-out pair accuracy, mean |",
        "|---|---|---|---|",
    ]
    for signal, steps in SETTINGS:
        group = [r for r in rows if (r["signal"], r["steps"]) == (signal, steps)]
        per_seed = ", ".join(f"{r['spearman']:.3f}" for r in group)
        mean_sp = sum(r["spearman"] for r in group) / len(group)
        mean_acc = sum(r["held_out_pair_accuracy"] for r in group) / len(group)
        pairs = group[0]["held_out_pairs"]
        lines.append(f"| {signal} | {steps} | {mean_sp:.3f} ({per_seed}) | {mean_acc:.2f} ({pairs} pairs) |")
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
