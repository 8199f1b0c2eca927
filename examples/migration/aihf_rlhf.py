"""aihf: reward model on the pairs, then RLOO against it, as one trainer (docs/migration.md,
"RewardTrainer + RLOO"): ``config_for("rlhf", ...)`` fits the reward model for
``reward_pretrain_steps`` Bradley-Terry steps, freezes it and trains the policy for ``num_rounds``
rounds of RLOO (``aihf rloo`` / ``aihf train --method rlhf`` on the command line). ``config_for("aihf_rl",
...)`` with ``demonstrations=`` keeps training the reward model on both kinds of data instead (AIHF-RL).

The reward model is saved to ``<output_dir>/reward_model``: a sequence classifier that TRL's
``reward_funcs`` or any other RL stack can load (see trl_rloo_with_aihf_reward.py).
"""

from aihf.llm import AIHFRLTrainer
from aihf.methods import config_for

import tiny

tok = tiny.tokenizer()
args = config_for(
    "rlhf",
    output_dir=tiny.output_dir("runs/migration/aihf_rlhf"),
    reward_readout="last",  # TRL's read-out (the score at the last token); aihf's default for new models: "mean"
    reward_pretrain_steps=1,
    reward_learning_rate=1e-3,
    reward_batch_size=16,
    learning_rate=1e-3,
    num_rounds=2,
    per_device_train_batch_size=4,  # prompts per policy step (num_generations completions each)
    num_generations=2,
    max_new_tokens=4,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
)
trainer = AIHFRLTrainer(
    model=tiny.model(tok),
    reward_model=tiny.reward_model(tok),  # optional: by default the policy's weights with a new score head
    args=args,
    preferences=tiny.preferences(),
    processing_class=tok,
)
trainer.train()
trainer.save_model()  # the policy in output_dir, the reward model in output_dir/reward_model
