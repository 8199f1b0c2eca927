"""Runs that cannot mix: output folders, resume checks, reproducible LoRA, untouched arguments,
TRL's argument names and metrics."""

import json
import os

import pytest
import torch
from peft import LoraConfig

from aihf import ConfigError
from aihf.llm import AIHFConfig, AIHFTrainer
from aihf.tasks.tiny import build_model

from .helpers import config, losses_by_step, reverse_task, task_tokenizer, trainer


def _saving(**overrides):
    return {"max_steps": 4, "save_strategy": "steps", "save_steps": 2, **overrides}


def test_fresh_run_refuses_an_output_dir_holding_another_run(tmp_path):
    first = trainer(tmp_path, **_saving())
    first.train()
    first.save_model()
    out = tmp_path / "out"
    assert {"checkpoint-2", "checkpoint-4", "model.safetensors"} <= set(os.listdir(out))

    again = trainer(tmp_path, **_saving(max_steps=2))
    with pytest.raises(
        ConfigError, match=r"already holds another run \(checkpoint-2, checkpoint-4.*overwrite_output_dir"
    ):
        again.train()
    assert sorted(p for p in os.listdir(out) if p.startswith("checkpoint")) == ["checkpoint-2", "checkpoint-4"]

    replaced = trainer(tmp_path, **_saving(max_steps=2, overwrite_output_dir=True))
    replaced.train()
    # the old run's checkpoints are gone: a later resume=True cannot pick the stale checkpoint-4
    assert sorted(p for p in os.listdir(out) if p.startswith("checkpoint")) == ["checkpoint-2"]
    assert json.loads((out / "checkpoint-2" / "aihf_run.json").read_text())["max_steps"] == 2


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(max_steps=6), "max_steps 4 there, 6 here"),
        (dict(beta=0.5), "beta 0.1 there, 0.5 here"),
        (dict(demo_weight=0.0), "demo_weight"),
        (dict(prefs=reverse_task(seed=9)[1]), "preferences"),
        (dict(use_weighting=True), "use_weighting None there, True here"),
        (dict(loss_type=["sigmoid", "hinge"], loss_weights=[1.0, 0.5]), "loss_type"),
    ],
)
def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path, change, named):
    trainer(tmp_path, **_saving()).train()
    other = trainer(tmp_path, **_saving(**change))
    with pytest.raises(ConfigError, match=f"checkpoint-4 belongs to another run.*{named}"):
        other.train(resume_from_checkpoint=True)


def test_resume_says_which_checkpoint_and_continues(tmp_path, capsys):
    full = trainer(tmp_path / "full", **_saving())
    full.train()
    resumed = trainer(tmp_path / "full", **_saving())
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "out" / "checkpoint-2"))
    assert f"resuming from {tmp_path / 'full' / 'out' / 'checkpoint-2'} (step 2)" in capsys.readouterr().err
    assert losses_by_step(resumed.state.log_history)[4] == pytest.approx(losses_by_step(full.state.log_history)[4])
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        trainer(tmp_path / "empty", max_steps=1).train(resume_from_checkpoint=True)


def _lora_losses(tmp_path, name):
    tok = task_tokenizer()
    model = build_model(tok, "llama", hidden_size=32, seed=0)
    # Whatever ran before (loading, data preparation, another process) leaves the global RNG in
    # some state: the adapters' initialisation must depend on args.seed only.
    torch.manual_seed(len(name))
    t = AIHFTrainer(
        model,
        args=config(tmp_path / name, max_steps=3, learning_rate=1e-2),
        demonstrations=reverse_task()[0],
        preferences=reverse_task()[1],
        processing_class=tok,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    t.train()
    return [h["loss"] for h in t.state.log_history if "loss" in h], [
        h["grad_norm"] for h in t.state.log_history if "grad_norm" in h
    ]


def test_lora_runs_are_reproducible_with_the_same_seed(tmp_path):
    assert _lora_losses(tmp_path, "a") == _lora_losses(tmp_path, "bb")  # bit-identical, as full fine-tuning


def test_callers_tokenizer_is_not_modified(tmp_path):
    tok = task_tokenizer()
    tok.pad_token = None
    t = trainer(tmp_path, tokenizer=tok, max_steps=1)
    assert tok.pad_token is None
    assert t.processing_class.pad_token == tok.eos_token  # the trainer's own copy pads with EOS


def test_trl_train_dataset_is_read_as_preferences(tmp_path):
    tok = task_tokenizer()
    demos, prefs = reverse_task()
    model = build_model(tok, "llama", hidden_size=32)
    t = AIHFTrainer(
        model, args=config(tmp_path, demo_weight=0.0), train_dataset=prefs, eval_dataset=prefs[:8], processing_class=tok
    )
    assert len(t.train_dataset.preferences) == len(prefs) and t.train_dataset.demonstrations is None
    assert len(t.eval_dataset.preferences) == 8
    with_demos = AIHFTrainer(
        model, args=config(tmp_path), train_dataset=prefs, demonstrations=demos, processing_class=tok
    )
    assert len(with_demos.train_dataset.demonstrations) == len(demos)
    with pytest.raises(ConfigError, match="train_dataset= is read as preference pairs.*demonstrations="):
        AIHFTrainer(model, args=config(tmp_path), train_dataset=prefs, processing_class=tok)
    with pytest.raises(ConfigError, match="train_dataset or preferences"):
        AIHFTrainer(model, args=config(tmp_path), train_dataset=prefs, preferences=prefs, processing_class=tok)


def test_trl_metrics_are_logged(tmp_path):
    t = trainer(tmp_path, max_steps=3)
    t.train()
    logs = [h for h in t.state.log_history if "loss" in h]
    assert all({"logits/chosen", "logits/rejected", "num_tokens"} <= set(h) for h in logs)
    tokens = [h["num_tokens"] for h in logs]
    assert tokens[0] > 0 and tokens == sorted(tokens) and tokens[2] > tokens[1]  # a running total


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(loss_type="kto"), "loss_type"),
        # several loss types are TRL's weighted mix (tests/llm/test_reductions.py), one weight each
        (dict(loss_type=["sigmoid", "ipo"], loss_weights=[1.0]), "one weight per loss type"),
        (dict(loss_type=["sigmoid", "kto"]), "loss_type"),
        (dict(loss_type=[]), "at least one loss type"),
        (dict(loss_type=["ipo", "hinge"], label_smoothing=0.1), "no meaning"),
        (dict(loss_type=["sigmoid", "robust"], label_smoothing=0.5), r"\[0, 0.5\) for loss_type 'robust'"),
        (dict(truncation_mode="keep_middle"), "truncation_mode"),
        (dict(dataset_num_proc=4), "dataset_num_proc=4: aihf prepares data in one pass"),
        (dict(sync_ref_model=True, ref_model_mixup_alpha=1.5), "ref_model_mixup_alpha"),
        (dict(sync_ref_model=True, precompute_ref_log_probs=True), "cannot be precomputed"),
        (dict(model_init_kwargs="{dtype"), "model_init_kwargs: not a JSON object"),
        (dict(label_smoothing=0.6), "label_smoothing"),
        (dict(loss_type="robust", label_smoothing=0.5), "label_smoothing"),
        (dict(loss_type="ipo", label_smoothing=0.1), "no meaning"),
    ],
)
def test_trl_option_validation(tmp_path, bad, match):
    with pytest.raises(ConfigError, match=match):
        AIHFConfig(output_dir=str(tmp_path), **bad)


def test_trl_loss_type_list_is_accepted(tmp_path):
    assert AIHFConfig(output_dir=str(tmp_path), loss_type=["ipo"]).loss_type == "ipo"
    mixed = AIHFConfig(output_dir=str(tmp_path), loss_type=["sigmoid", "robust"], label_smoothing=0.1)
    assert mixed.loss_type == ["sigmoid", "robust"]
    assert AIHFConfig(output_dir=str(tmp_path), model_init_kwargs='{"dtype": "float32"}').model_init_kwargs == {
        "dtype": "float32"
    }


def test_launch_with_several_processes_and_no_gpu_is_detected(monkeypatch):
    # AIHFConfig then sets use_cpu=True; the real 2-process run is in tests/test_distributed.py.
    from aihf.llm.config import _launched_data_parallel_on_cpu

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _launched_data_parallel_on_cpu() is (not torch.cuda.is_available())
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert _launched_data_parallel_on_cpu() is False
