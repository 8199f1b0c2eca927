"""AIHF-RL's round settings on the toy task of tests/llm/rl_task.py: old defaults against new ones.

For each setting and seed: train, then sample 8 answers for each of the 6 topics from the final
policy (a fixed sampling seed) and report their mean gold reward (-2..2; a random policy is about 0,
the demonstrations 2). "oracle": the gold itself is the policy's reward (reward_funcs, reward
weights [0, 1], no reward steps); "aihf_rl": the learned reward (demonstrations and preferences);
"rft": the learned reward from the demonstrations only (pref_weight=0).

    PYTHONPATH=. python benchmarks/rl_defaults.py --rounds 6 --seeds 0 1 2 3 4 \
        > benchmarks/results/rl_defaults/table_6rounds.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aihf.llm.rl_trainer import AIHFRLTrainer  # noqa: E402
from tests.llm import rl_task  # noqa: E402

SETTINGS = {
    "old defaults (1 policy + 1 reward step per round, last-token read-out)": dict(defaults=False),
    "old defaults, 4x rounds (as many policy updates)": dict(defaults=False, rounds_factor=4),
    "4 policy steps, 1 reward step, mean read-out": dict(defaults=True, reward_steps_per_round=1),
    "... with the last-token read-out": dict(defaults=True, reward_steps_per_round=1, reward_readout="last"),
    "... + whitened rewards": dict(defaults=True, reward_steps_per_round=1, whiten_rewards=True),
    "... + fresh samples": dict(defaults=True, reward_steps_per_round=1, fresh_reward_samples=True),
    "new defaults (4 policy + 4 reward steps, mean read-out)": dict(defaults=True),
    "new defaults + whitened rewards + fresh samples": dict(
        defaults=True, whiten_rewards=True, fresh_reward_samples=True
    ),
}


def final_gold(trainer: AIHFRLTrainer, seed: int) -> float:
    tok = trainer.tokenizer
    prompts = [tok(f"say : {t}")["input_ids"] for t in rl_task.TOPICS for _ in range(8)]
    completions = trainer._generate(prompts, seed=10_000 + seed)
    texts = tok.batch_decode(completions, skip_special_tokens=True)
    return statistics.mean(rl_task.gold(t) for t in texts)


def run(kind: str, setting: dict, rounds: int, seed: int) -> tuple[float, float, float]:
    setting = dict(setting)
    rounds *= setting.pop("rounds_factor", 1)
    if kind == "oracle":
        if any(key.startswith("reward") or key == "fresh_reward_samples" for key in setting):
            return float("nan"), float("nan"), 0.0  # reward-step settings do not apply
        setting.update(reward_steps_per_round=0, reward_weights=[0.0, 1.0])
    tok = rl_task.tokenizer()
    demos, prefs, eval_prefs = rl_task.make_data(seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "rft":
            setting["pref_weight"] = 0.0
        args = rl_task.rl_args(Path(tmp), num_rounds=rounds, seed=seed, **setting)
        trainer = AIHFRLTrainer(
            rl_task.model(tok, seed=seed),
            args=args,
            demonstrations=demos,
            preferences=prefs,
            eval_preferences=eval_prefs,
            processing_class=tok,
            reward_funcs=[rl_task.gold_reward] if kind == "oracle" else None,
        )
        start = time.process_time()
        trainer.train()
        cpu = time.process_time() - start
        acc = trainer.log_history[-1].get("reward/eval_accuracy", float("nan"))
        return final_gold(trainer, seed), acc, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", default=["oracle", "aihf_rl", "rft"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    opts = parser.parse_args()
    print(f"{opts.rounds} rounds, seeds {opts.seeds}; final policy's mean gold (-2..2) per seed; CPU s per run\n")
    print("| run | setting | gold per seed | mean | RM eval acc (mean) | CPU s |")
    print("|---|---|---|---|---|---|")
    for kind in opts.kinds:
        for name in opts.settings:
            results = [run(kind, SETTINGS[name], opts.rounds, s) for s in opts.seeds]
            golds = [g for g, _, _ in results]
            if any(g != g for g in golds):
                continue
            accs = [a for _, a, _ in results]
            acc = f"{statistics.mean(accs):.2f}" if kind != "oracle" else "-"
            cpu = statistics.mean(c for _, _, c in results)
            row = f"| {kind} | {name} | {', '.join(f'{g:.2f}' for g in golds)} | {statistics.mean(golds):.2f} "
            print(row + f"| {acc} | {cpu:.1f} |", flush=True)


if __name__ == "__main__":
    main()
