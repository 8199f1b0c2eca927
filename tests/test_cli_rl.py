"""AIHF-RL from the command-line entry points, as a user calls them: train_rl for each method,
eval_reward on the saved reward model, the example config, and bad input refused early."""

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from aihf import ConfigError, DataError
from aihf.cli_rl import eval_reward, train_rl
from aihf.llm.generation import HFGenerator
from tests.llm import rl_task

ROOT = Path(__file__).resolve().parents[1]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl_cli")
    tok = rl_task.tokenizer()
    model = rl_task.model(tok)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    demos, prefs, eval_prefs = rl_task.make_data()
    return {
        "root": root,
        "model": str(root / "model"),
        "demos": _write_jsonl(root / "demos.jsonl", demos),
        "prefs": _write_jsonl(root / "prefs.jsonl", prefs),
        "eval_prefs": _write_jsonl(root / "eval_prefs.jsonl", eval_prefs),
    }


def _flags(ws, out, method, **extra):
    flags = {
        "model_name_or_path": ws["model"],
        "demonstrations": ws["demos"],
        "preferences": ws["prefs"],
        "eval_preferences": ws["eval_prefs"],
        "output_dir": str(out),
        "method": method,
        "num_rounds": 20,
        "per_device_train_batch_size": 8,
        "num_generations": 4,
        "max_new_tokens": 3,
        "learning_rate": 1e-2,
        "reward_learning_rate": 3e-3,
        "reward_batch_size": 16,
        "beta": 0.01,
        "report_to": "none",
        "use_cpu": "true",
        "save_strategy": "no",
        "disable_tqdm": "true",
        "seed": 0,
    }
    flags.update(extra)
    return [x for k, v in flags.items() for x in (f"--{k}", str(v))]


def _gold_of(model_dir, n=64):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    gen = HFGenerator(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, max_new_tokens=3)
    prompts = [tok(f"say : {t}")["input_ids"] for t in rl_task.TOPICS] * (n // len(rl_task.TOPICS))
    outs = gen(model, prompts, seed=123)
    return sum(rl_task.gold(tok.decode(o, skip_special_tokens=True)) for o in outs) / len(outs)


@pytest.mark.learning
@pytest.mark.parametrize(
    "method, extra",
    [
        ("aihf_rl", {}),
        ("rlhf", {"reward_pretrain_steps": 60, "reward_pretrain_patience": 2}),
        ("rft", {}),
    ],
)
def test_train_rl_methods_learn_through_the_cli(workspace, tmp_path, method, extra):
    out = tmp_path / method
    metrics = train_rl(_flags(workspace, out, method, **extra))
    # The trained policy's gold reward is well above the starting model's (about 0; at most 2).
    # Over seeds 0-3 the gain was 0.9-1.3 (aihf_rl), 0.5-1.9 (rlhf), 0.75-1.8 (rft).
    assert _gold_of(str(out)) > _gold_of(workspace["model"]) + 0.3
    if method != "rft":
        # The learned reward ranks held-out pairs well above chance (0.5): 0.9-1.0 over seeds 0-3.
        # (Not asserted for rft: a reward fitted only to tell demonstrations from the policy's
        # samples ranks the held-out pairs at 0.62-1.0 over those seeds, as its samples become good.)
        assert metrics["reward/eval_accuracy"] > 0.7
    assert (out / "reward_model" / "config.json").is_file() and (out / "all_results.json").is_file()
    history = json.loads((out / "log_history.json").read_text())
    if method == "rlhf":
        assert "reward_model/loss" not in metrics  # frozen after pretraining
        assert history[0]["reward_pretrain/best_holdout_accuracy"] > 0.7
    if method == "rft":
        assert "reward_model/loss_pref" not in metrics and "reward_model/loss_demo" in metrics
    if method == "aihf_rl":
        assert "reward_model/loss_pref" in metrics and "reward_model/loss_demo" in metrics
        # eval-reward on the saved reward model reproduces the last round's held-out numbers.
        evaluated = eval_reward(
            ["--reward_model", str(out / "reward_model"), "--preferences", workspace["eval_prefs"]]
        )
        assert evaluated["accuracy"] == pytest.approx(metrics["reward/eval_accuracy"], abs=1e-6)
        assert evaluated["margin"] == pytest.approx(metrics["reward/eval_margin"], abs=1e-4)


def test_sft_then_rlhf_runs_through_the_cli(workspace, tmp_path):
    out = tmp_path / "pipeline"
    metrics = train_rl(
        _flags(workspace, out, "sft_then_rlhf", num_rounds=3, reward_pretrain_steps=5, sft_max_steps=5)
    )
    assert set(metrics) == {"sft", "rlhf"}
    assert (out / "sft" / "model.safetensors").is_file()
    assert (out / "rlhf" / "reward_model" / "config.json").is_file()
    assert metrics["rlhf"]["step"] == 3


def test_example_config_runs_as_shipped(workspace, tmp_path):
    """examples/aihf_rl.yaml with only the paths (and the length of the run) replaced."""
    metrics = train_rl(
        [
            "--config",
            str(ROOT / "examples" / "aihf_rl.yaml"),
            "--model_name_or_path",
            workspace["model"],
            "--demonstrations",
            workspace["demos"],
            "--preferences",
            workspace["prefs"],
            "--output_dir",
            str(tmp_path / "example"),
            "--num_rounds",
            "2",
            "--save_steps",
            "1",
        ]
    )
    assert metrics["round"] == 2
    assert (tmp_path / "example" / "checkpoint-2" / "rl_state.json").is_file()
    written = [name for _, _, files in os.walk(tmp_path / "example") for name in files]
    assert any(name.startswith("events.out.tfevents") for name in written)


def test_bad_input_refused_before_any_model_is_loaded(workspace, tmp_path):
    # A folder with the tokenizer but no weights: reaching the model load would raise OSError.
    no_weights = tmp_path / "tokenizer_only"
    AutoTokenizer.from_pretrained(workspace["model"]).save_pretrained(no_weights)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(Path(workspace["prefs"]).read_text() + json.dumps({"prompt": "say : t1", "chosen": "g1"}) + "\n")
    flags = _flags(workspace, tmp_path / "o", "aihf_rl", model_name_or_path=no_weights, preferences=bad)
    with pytest.raises(DataError, match=r"bad.jsonl, line 49.*rejected"):
        train_rl(flags)
    with pytest.raises(ConfigError, match="reward_pretrain_steps"):
        train_rl(_flags(workspace, tmp_path / "o", "rlhf"))
    with pytest.raises(ConfigError, match="num_generations"):
        train_rl(_flags(workspace, tmp_path / "o", "aihf_rl", num_generations=1))
    config = tmp_path / "c.yaml"
    config.write_text("num_roundz: 3\n")
    with pytest.raises(ConfigError, match="num_roundz"):
        train_rl(["--config", str(config)] + _flags(workspace, tmp_path / "o", "aihf_rl"))
    assert not (tmp_path / "o").exists()
