"""TRL: DPO on preference pairs (the TRL side of docs/migration.md, "DPO")."""

from trl import DPOConfig, DPOTrainer

import tiny

tok = tiny.tokenizer()
model = tiny.model(tok)
args = DPOConfig(
    output_dir=tiny.output_dir("runs/migration/trl_dpo"),
    beta=0.1,
    learning_rate=1e-3,
    per_device_train_batch_size=16,
    max_steps=3,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    bf16=False,
    gradient_checkpointing=False,
)
trainer = DPOTrainer(
    model=model,
    ref_model=tiny.model(tok),  # the same weights (seed 0): TRL would otherwise look the model up on the Hub
    args=args,
    train_dataset=tiny.preferences(),
    processing_class=tok,
)
trainer.train()
trainer.save_model()
