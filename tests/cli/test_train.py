"""`aihf train` runs as a user types them: every method, LoRA, resume, the two-stage baseline."""

import json
import os
import shutil
import warnings

import pytest
import yaml

from aihf.cli import main

from .conftest import train, user_error


@pytest.mark.parametrize(
    "flags, expect",
    [
        ([], {"loss/pref", "demo/nll"}),
        (["--demo_loss", "self_play"], {"loss/pref", "demo/sample_logps"}),
        (["--method", "dpo"], {"loss/pref"}),
        (["--method", "sft"], {"demo/nll"}),
        (["--method", "spin"], {"demo/margins"}),
        (["--use_peft", "true", "--lora_r", "4"], {"loss/pref", "demo/nll"}),
    ],
)
def test_train_cli_modes(workdir, flags, expect):
    out = workdir / "out"
    assert train(workdir, out, *flags) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    first = state["log_history"][0]
    assert expect <= set(first), sorted(first)
    if "--method" in flags and flags[1] in ("dpo",):
        assert "demo/logps" not in first
    if "--method" in flags and flags[1] in ("sft", "spin"):
        assert "rewards/chosen" not in first
    assert (out / ("adapter_model.safetensors" if "--use_peft" in flags else "model.safetensors")).exists()


def test_train_cli_two_stage_baseline(workdir):
    out = workdir / "out"
    assert train(workdir, out, "--method", "sft_then_dpo", "--sft_max_steps", "3") == 0
    sft = json.loads((out / "sft" / "trainer_state.json").read_text())
    dpo = json.loads((out / "dpo" / "trainer_state.json").read_text())
    assert sft["global_step"] == 3 and "demo/nll" in sft["log_history"][0] and "loss/pref" not in sft["log_history"][0]
    assert dpo["global_step"] == 2 and "loss/pref" in dpo["log_history"][0] and "demo/nll" not in dpo["log_history"][0]
    # the DPO reference is the SFT model, so DPO starts from zero implicit rewards
    assert dpo["log_history"][0]["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)


def test_train_cli_resume_flag(workdir):
    out = workdir / "out"
    save_every_step = ["--save_strategy", "steps", "--save_steps", "1"]
    assert train(workdir, out, *save_every_step, "--max_steps", "3") == 0
    shutil.rmtree(out / "checkpoint-3")  # as if killed during step 3: resume from checkpoint-2
    assert train(workdir, out, *save_every_step, "--max_steps", "3", "--resume_from_checkpoint", "true") == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and os.path.isdir(out / "checkpoint-3")


def test_two_stage_lora_result_reloads_with_the_sft_stage(workdir):
    import torch
    from transformers import AutoModelForCausalLM

    out = workdir / "out"
    flags = ["--method", "sft_then_dpo", "--use_peft", "true", "--lora_r", "4", "--learning_rate", "1e-2"]
    assert train(workdir, out, *flags, "--sft_max_steps", "3") == 0
    assert json.loads((out / "dpo" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        out / "sft" / "merged"
    )
    reloaded = AutoModelForCausalLM.from_pretrained(out / "dpo").eval()
    base = AutoModelForCausalLM.from_pretrained(workdir / "model").eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        sft_merged = AutoModelForCausalLM.from_pretrained(out / "sft" / "merged").eval()(ids).logits
        assert not torch.allclose(sft_merged, base(ids).logits, atol=1e-3)  # the SFT stage changed the model
        assert not torch.allclose(reloaded(ids).logits, base(ids).logits, atol=1e-3)


def test_two_stage_cli_refuses_options_it_would_ignore(workdir, capsys):
    out = workdir / "o"
    flags = ["--method", "sft_then_dpo", "--eval_preferences", str(workdir / "prefs.jsonl")]
    line = user_error(capsys, ["train", "--config", str(workdir / "run.yaml"), *flags, "--output_dir", str(out)], out)
    assert line == "aihf train: --method sft_then_dpo does not support eval_preferences yet"


# issue 7 item 6 ------------------------------------------------------------------------------
@pytest.mark.parametrize("method, final", [("aihf", "."), ("sft_then_dpo", "dpo")])
def test_train_prints_where_the_final_model_went(workdir, capsys, method, final):
    out = workdir / "out"
    assert train(workdir, out, "--method", method, "--sft_max_steps", "1") == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    where = os.path.normpath(out / final)
    assert last == f"aihf train: final model saved to {where}"
    assert (out / final / "model.safetensors").exists()


def test_train_prints_where_the_lora_adapter_went(workdir, capsys):
    out = workdir / "out"
    assert train(workdir, out, "--use_peft", "true", "--lora_r", "4", "--max_steps", "1") == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"aihf train: final LoRA adapter saved to {out}"
    assert (out / "adapter_model.safetensors").exists()


# issue 7 item 10 -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flags, named",
    [
        (["--method", "dpo", "--demo_weight", "0.5"], "--method dpo contradicts --demo_weight 0.5"),
        (["--method", "sft", "--demo_loss", "self_play"], "--method sft contradicts --demo_loss self_play"),
        (["--method", "spin", "--pref_weight", "1"], "--method spin contradicts --pref_weight 1.0"),
        (["--method", "spin", "--demo_loss", "nll"], "--method spin contradicts --demo_loss nll"),
        (["--method", "sft_then_dpo", "--demo_weight", "0.3"], "--method sft_then_dpo contradicts --demo_weight 0.3"),
    ],
)
def test_method_refuses_a_contradicting_flag(workdir, capsys, flags, named):
    out = workdir / "o"
    line = user_error(capsys, ["train", "--config", str(workdir / "run.yaml"), *flags, "--output_dir", str(out)], out)
    assert line.startswith(f"aihf train: {named}: "), line
    assert "--method aihf" in line  # says how to get what was asked for


def test_method_refuses_a_contradiction_inside_the_yaml(workdir, capsys):
    config = yaml.safe_load((workdir / "run.yaml").read_text())
    path = workdir / "dpo.yaml"
    path.write_text(yaml.safe_dump({**config, "method": "dpo", "demo_weight": 0.5}))
    out = workdir / "o"
    line = user_error(capsys, ["train", "--config", str(path), "--output_dir", str(out)], out)
    assert line.startswith(f"aihf train: method: dpo in {path} contradicts demo_weight: 0.5 in {path}: ")


def test_method_flag_overrides_the_yaml_and_agreeing_values_pass(workdir, capsys):
    """Flags override the YAML (documented in --method's help), with one warning line for the value
    replaced; a value that agrees is no contradiction. stdout carries the results alone (the metrics
    and where the model went), the progress (the Trainer's log lines, aihf's INFO lines) goes to stderr."""
    config = yaml.safe_load((workdir / "run.yaml").read_text())
    path = workdir / "weights.yaml"
    path.write_text(yaml.safe_dump({**config, "demo_weight": 0.5, "demo_loss": "nll"}))
    out = workdir / "out"
    capsys.readouterr()
    assert main(["train", "--config", str(path), "--method", "dpo", "--output_dir", str(out)]) == 0
    first = json.loads((out / "trainer_state.json").read_text())["log_history"][0]
    assert "loss/pref" in first and "demo/nll" not in first
    captured = capsys.readouterr()
    warning = (
        f"aihf train: warning: --method dpo sets demo_weight=0.0 (DPO has no demonstration term), so demo_weight: "
        f"0.5 in {path} is not used"
    )
    assert [line for line in captured.err.splitlines() if "warning" in line] == [warning]
    assert "'loss/pref'" in captured.err  # the Trainer's log dict of a step (logging_steps: 1)
    head, last = captured.out.rsplit("}", 1)
    assert json.loads(head + "}")["train_runtime"] > 0 and last.strip() == f"aihf train: final model saved to {out}"
    assert train(workdir, workdir / "out2", "--method", "sft", "--pref_weight", "0", "--demo_loss", "nll") == 0


# issue 7 item 12 -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flags",
    [
        ["--method", "dpo"],
        ["--method", "sft"],
        ["--method", "spin"],
        ["--method", "sft_then_dpo", "--sft_max_steps", "1", "--use_peft", "true", "--lora_r", "4"],
        ["--use_peft", "true", "--lora_r", "4"],
    ],
)
def test_runs_raise_no_warning_that_asks_nothing_of_the_user(workdir, flags):
    """run.yaml gives both demonstrations and preferences: a method that uses one of them must not
    warn that it ignores the other (that UserWarning pointed at cli.py), and LoRA runs must not pass
    on library noise. Deprecation warnings (for developers; Python hides them) are not counted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train(workdir, workdir / "out", "--max_steps", "1", *flags) == 0
    shown = [f"{w.category.__name__} {w.filename}:{w.lineno}: {w.message}" for w in caught]
    assert [w for w, c in zip(shown, caught) if not issubclass(c.category, DeprecationWarning)] == []
