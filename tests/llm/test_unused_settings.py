"""Every inherited TrainingArguments field a trainer would ignore is refused in Python, as on the
command line (issue 19, item 5)."""

import pytest

from aihf import ConfigError
from aihf.llm import AIHFConfig, AIHFRLTrainer
from aihf.llm.rl_config import ROUND_FIELDS, UNUSED_TRAINING_ARGUMENTS
from aihf.llm.pipelines import rlhf_stage_args

from . import rl_task

SET_VALUES = {
    "num_train_epochs": 1.0,
    "eval_strategy": "epoch",
    "per_device_eval_batch_size": 4,
    "logging_strategy": "epoch",
    "save_strategy": "best",
    "load_best_model_at_end": True,
    "metric_for_best_model": "loss",
    "fp16": True,
    "gradient_checkpointing": True,
    "optim": "sgd",
    "optim_args": "momentum=0.9",
    "lr_scheduler_kwargs": {"num_cycles": 2},
    "label_smoothing_factor": 0.1,
    "torch_compile": True,
    "neftune_noise_alpha": 5.0,
    "data_seed": 3,
    "auto_find_batch_size": True,
    "use_liger_kernel": True,
    "push_to_hub": True,
    "deepspeed": "ds_config.json",
    "fsdp": "full_shard",
}


def test_every_audited_field_has_a_case():
    assert set(SET_VALUES) == set(UNUSED_TRAINING_ARGUMENTS)


@pytest.mark.parametrize("name", sorted(UNUSED_TRAINING_ARGUMENTS))
def test_aihf_rl_refuses_a_setting_it_would_ignore(tmp_path, name):
    tok = rl_task.tokenizer()
    demos, prefs, _ = rl_task.make_data(n_demos=4, n_prefs=4, n_eval=2)
    with pytest.raises(ConfigError, match=f"^{name}=.* is not used by AIHF-RL"):
        args = rl_task.rl_args(tmp_path, num_rounds=1, **{name: SET_VALUES[name]})
        AIHFRLTrainer(rl_task.model(tok), args=args, demonstrations=demos, preferences=prefs, processing_class=tok)


def test_sft_then_rlhf_reads_the_step_budget_for_its_sft_stage_only(tmp_path):
    args = rl_task.rl_args(tmp_path, max_steps=5, num_train_epochs=1.0, reward_pretrain_steps=1)
    rl = rlhf_stage_args(args)
    assert (rl.max_steps, rl.num_train_epochs) == (-1, 3.0)
    assert ROUND_FIELDS == ("max_steps", "num_train_epochs")


def test_aihf_refuses_the_transformers_label_smoothing(tmp_path):
    with pytest.raises(ConfigError, match="label_smoothing_factor=0.1 is not used by AIHFTrainer"):
        AIHFConfig(output_dir=str(tmp_path), label_smoothing_factor=0.1)
