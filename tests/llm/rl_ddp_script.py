"""Run by tests/llm/test_rl_trainer.py under ``torchrun --nproc_per_node 2``: AIHF-RL on the gold
task with 2 processes x 4 prompts; writes rank 0's history and every rank's weight checksums."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from aihf.llm.rl_trainer import AIHFRLTrainer
from tests.llm import rl_task

out = Path(sys.argv[1])
tok = rl_task.tokenizer()
demos, prefs, eval_prefs = rl_task.make_data()
args = rl_task.rl_args(out, per_device_train_batch_size=4, reward_batch_size=8, save_strategy="steps", save_steps=10)
t = AIHFRLTrainer(
    rl_task.model(tok, seed=int(sys.argv[2]) + args.process_index),  # different on purpose: rank 0's wins
    args=args,
    demonstrations=demos,
    preferences=prefs,
    eval_preferences=eval_prefs,
    processing_class=tok,
    gold_reward=rl_task.gold_reward,
)
t.train()
sums = torch.tensor(
    [sum(p.double().sum().item() for p in m.parameters()) for m in (t.policy, t.reward_model)], dtype=torch.float64
)
gathered = [torch.zeros_like(sums) for _ in range(t.world)]
dist.all_gather(gathered, sums)
if t.rank == 0:
    result = {"world": t.world, "checksums": [g.tolist() for g in gathered], "history": t.log_history}
    (out / "ddp.json").write_text(json.dumps(result))
dist.barrier()
dist.destroy_process_group()
