"""aihf: the same two-stage run (docs/migration.md, "SFT -> DPO") as one call.

``sft_then_dpo`` trains the SFT stage (``<output_dir>/sft``), then DPO (``<output_dir>/dpo``) with the
SFT model as the frozen reference; ``config_for("sft_then_dpo", ...)`` configures the DPO stage and the
SFT stage takes the same settings with ``pref_weight=0`` (pass ``sft_args=`` to set it apart).
``aihf train --method sft_then_dpo`` runs the same from the command line. The one-stage alternative
that this baseline is compared with is ``config_for("aihf", ...)`` with both datasets.
"""

from aihf.llm.pipelines import sft_then_dpo
from aihf.methods import config_for

import tiny

tok = tiny.tokenizer()
args = config_for(
    "sft_then_dpo",
    output_dir=tiny.output_dir("runs/migration/aihf_sft_then_dpo"),
    beta=0.1,
    learning_rate=1e-3,
    per_device_train_batch_size=16,
    max_steps=3,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
)
result = sft_then_dpo(tiny.model(tok), args, tiny.demonstrations(), tiny.preferences(), tok)
