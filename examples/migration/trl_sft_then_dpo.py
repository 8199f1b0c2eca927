"""TRL: SFT, then DPO from the SFT model (the TRL side of docs/migration.md, "SFT -> DPO")."""

import copy
import os

from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

import tiny

out = tiny.output_dir("runs/migration/trl_sft_then_dpo")
tok = tiny.tokenizer()
common = dict(
    learning_rate=1e-3,
    per_device_train_batch_size=16,
    max_steps=3,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    bf16=False,
    gradient_checkpointing=False,
)
sft = SFTTrainer(
    model=tiny.model(tok),
    args=SFTConfig(output_dir=os.path.join(out, "sft"), **common),
    train_dataset=tiny.demonstrations(),
    processing_class=tok,
)
sft.train()
sft.save_model()
dpo = DPOTrainer(
    model=sft.model,
    ref_model=copy.deepcopy(sft.model),  # the SFT model, frozen
    args=DPOConfig(output_dir=os.path.join(out, "dpo"), beta=0.1, **common),
    train_dataset=tiny.preferences(),
    processing_class=tok,
)
dpo.train()
dpo.save_model()
