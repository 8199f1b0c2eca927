"""TRL: SFT on prompt/completion demonstrations (the TRL side of docs/migration.md, "SFT")."""

from trl import SFTConfig, SFTTrainer

import tiny

tok = tiny.tokenizer()
args = SFTConfig(
    output_dir=tiny.output_dir("runs/migration/trl_sft"),
    learning_rate=1e-3,
    per_device_train_batch_size=16,
    max_steps=3,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    bf16=False,
    gradient_checkpointing=False,
)
trainer = SFTTrainer(model=tiny.model(tok), args=args, train_dataset=tiny.demonstrations(), processing_class=tok)
trainer.train()
trainer.save_model()
