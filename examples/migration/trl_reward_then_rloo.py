"""TRL: a reward model on preference pairs (RewardTrainer), then RLOO against it (RLOOTrainer):
the TRL side of docs/migration.md, "RewardTrainer + RLOO"."""

import os

from trl import RewardConfig, RewardTrainer, RLOOConfig, RLOOTrainer

import tiny

out = tiny.output_dir("runs/migration/trl_reward_then_rloo")
tok = tiny.tokenizer()
common = dict(logging_steps=1, save_strategy="no", report_to="none", bf16=False, gradient_checkpointing=False)

reward = RewardTrainer(
    model=tiny.reward_model(tok),
    args=RewardConfig(
        output_dir=os.path.join(out, "reward"), learning_rate=1e-3, per_device_train_batch_size=16, max_steps=1,
        **common,
    ),
    train_dataset=tiny.preferences(),
    processing_class=tok,
)
reward.train()
reward.save_model()  # a sequence classifier: RLOO reads its score at the last token

# RLOO loads its reference model from the policy's path, so the policy goes in as a folder (a Hub id in
# your script).
policy_dir = os.path.join(out, "base")
tiny.model(tok).save_pretrained(policy_dir)
tok.save_pretrained(policy_dir)
rloo = RLOOTrainer(
    model=policy_dir,
    reward_funcs=os.path.join(out, "reward"),  # a folder, a model id, a model object or a callable
    args=RLOOConfig(
        output_dir=os.path.join(out, "rloo"),
        learning_rate=1e-3,
        per_device_train_batch_size=8,  # completions: 4 prompts x num_generations
        num_generations=2,
        max_completion_length=4,
        max_steps=2,
        **common,
    ),
    train_dataset=tiny.prompts(),
    processing_class=tok,
)
rloo.train()
rloo.save_model()
