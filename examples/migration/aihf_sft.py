"""aihf: the same SFT run (docs/migration.md, "SFT"): demonstrations go in ``demonstrations=``.

``config_for("sft", ...)`` is ``AIHFConfig(pref_weight=0, demo_loss="nll")``: the NLL of the
demonstrations' completions, as TRL's SFTTrainer on prompt/completion rows.
"""

from aihf.llm import AIHFTrainer
from aihf.methods import config_for

import tiny

tok = tiny.tokenizer()
args = config_for(
    "sft",
    output_dir=tiny.output_dir("runs/migration/aihf_sft"),
    learning_rate=1e-3,
    per_device_train_batch_size=16,
    max_steps=3,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
)
trainer = AIHFTrainer(
    model=tiny.model(tok), args=args, demonstrations=tiny.demonstrations(), processing_class=tok
)
trainer.train()
trainer.save_model()
