"""aihf: the same DPO run (docs/migration.md, "DPO"): the import, and the config from the "dpo" preset.

``config_for("dpo", ...)`` is ``AIHFConfig(demo_weight=0, ...)``: AIHF without its demonstration term
is DPO. To add demonstrations, use ``config_for("aihf", ...)`` and pass ``demonstrations=``.
"""

from aihf.llm import AIHFTrainer
from aihf.methods import config_for

import tiny

tok = tiny.tokenizer()
model = tiny.model(tok)
args = config_for(
    "dpo",
    output_dir=tiny.output_dir("runs/migration/aihf_dpo"),
    beta=0.1,
    learning_rate=1e-3,
    per_device_train_batch_size=16,
    max_steps=3,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
)
trainer = AIHFTrainer(
    model=model,
    ref_model=tiny.model(tok),  # optional: by default a frozen copy of the policy as it starts
    args=args,
    preferences=tiny.preferences(),  # TRL's train_dataset= of pairs
    processing_class=tok,
)
trainer.train()
trainer.save_model()
