"""Files from elsewhere never run code: checkpoints resume through weights-only loading, values read
back from checkpoints cannot move writes out of the output folder, YAML is read safely, and
trust_remote_code stays off unless asked."""

import builtins
import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from aihf import ConfigError
from aihf.cli import main
from aihf.llm import AIHFRLTrainer, guards
from aihf.llm.reward_model import load_reward_model
from tests.cli.conftest import workdir  # noqa: F401  (a fixture)
from tests.llm import rl_task
from tests.llm.helpers import trainer


class _Payload:
    """Unpickling this calls open(marker, "w"): it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def _plant(path, marker):
    torch.save({"state": _Payload(marker)}, path)


def _implicit_checkpoint(tmp_path, **overrides):
    t = trainer(tmp_path, max_steps=2, save_strategy="steps", save_steps=1, **overrides)
    t.train()
    return tmp_path / "out" / "checkpoint-1"


def _resume(tmp_path, checkpoint, **overrides):
    t = trainer(tmp_path, max_steps=2, save_strategy="steps", save_steps=1, **overrides)
    return t.train(resume_from_checkpoint=str(checkpoint))


def test_checkpoints_hold_weights_as_safetensors(tmp_path):
    checkpoint = _implicit_checkpoint(tmp_path)
    names = os.listdir(checkpoint)
    assert "model.safetensors" in names and not [n for n in names if n.endswith(".bin") and "model" in n]


@pytest.mark.parametrize("file", ["optimizer.pt", "scheduler.pt", "rng_state.pth"])
def test_resume_refuses_a_pickle_that_would_run_code(tmp_path, file):
    checkpoint = _implicit_checkpoint(tmp_path)
    marker = tmp_path / "pwned"
    _plant(checkpoint / file, marker)
    with pytest.raises(ConfigError, match=r"resume_from_checkpoint: .*checkpoint-1: the .* was not unpickled"):
        _resume(tmp_path, checkpoint)
    assert not marker.exists()


def test_training_args_bin_is_never_unpickled_on_resume(tmp_path):
    # transformers writes the TrainingArguments as a pickle; neither it nor aihf reads it back.
    checkpoint = _implicit_checkpoint(tmp_path)
    marker = tmp_path / "pwned"
    _plant(checkpoint / "training_args.bin", marker)
    _resume(tmp_path, checkpoint)
    assert not marker.exists()


def test_resume_refuses_a_step_that_is_not_a_number(tmp_path):
    checkpoint = _implicit_checkpoint(tmp_path)
    state_file = checkpoint / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["global_step"] = "../../escaped"
    state_file.write_text(json.dumps(state))
    with pytest.raises(ConfigError, match=r"trainer_state.json: 'global_step' must be an integer >= 0, got '\.\./"):
        _resume(tmp_path, checkpoint)


def test_resume_refuses_a_self_play_round_that_is_not_a_number(tmp_path):
    common = dict(demo_loss="self_play", self_play_round_steps=1)
    checkpoint = _implicit_checkpoint(tmp_path, **common)
    state_file = checkpoint / "aihf_self_play.json"
    state = json.loads(state_file.read_text())
    state["round"] = "../x"
    state_file.write_text(json.dumps(state))
    with pytest.raises(ConfigError, match=r"aihf_self_play.json: 'round' must be an integer"):
        _resume(tmp_path, checkpoint, **common)


def _rl(tmp_path):
    tok = rl_task.tokenizer()
    demos, prefs, _ = rl_task.make_data(n_demos=4, n_prefs=4, n_eval=2)
    args = rl_task.rl_args(
        tmp_path, num_rounds=1, per_device_train_batch_size=2, reward_batch_size=2, save_strategy="steps", save_steps=1
    )
    return AIHFRLTrainer(rl_task.model(tok), args=args, demonstrations=demos, preferences=prefs, processing_class=tok)


@pytest.mark.parametrize("file", ["policy_optimizer.pt", "reward_scheduler.pt", "rng_state.pt"])
def test_rl_resume_refuses_a_pickle_that_would_run_code(tmp_path, file):
    _rl(tmp_path).train()
    checkpoint = tmp_path / "out" / "checkpoint-1"
    marker = tmp_path / "pwned"
    _plant(checkpoint / file, marker)
    with pytest.raises(ConfigError, match=r"checkpoint-1: the .* was not unpickled"):
        _rl(tmp_path).train(resume_from_checkpoint=str(checkpoint))
    assert not marker.exists()


@pytest.mark.parametrize(
    "key, value",
    [("round", "../../escaped"), ("round", -1), ("samplers", {"rl": ["0", 1]}), ("samplers", {"x": [0, 0]})],
)
def test_rl_resume_refuses_a_tampered_state_file(tmp_path, key, value):
    _rl(tmp_path).train()
    checkpoint = tmp_path / "out" / "checkpoint-1"
    state = json.loads((checkpoint / "rl_state.json").read_text())
    state[key] = value
    (checkpoint / "rl_state.json").write_text(json.dumps(state))
    with pytest.raises(ConfigError, match=r"rl_state.json: "):
        _rl(tmp_path).train(resume_from_checkpoint=str(checkpoint))
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_written_paths_stay_inside_the_output_folder(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    assert guards.inside(str(root), "checkpoint-3") == str(root / "checkpoint-3")
    for name in ("../escaped", "/etc/passwd", "", "a/../../b"):
        with pytest.raises(ConfigError, match="is not inside the output folder"):
            guards.inside(str(root), name)
    os.symlink(tmp_path, root / "link")  # a link planted in the folder that points outside it
    with pytest.raises(ConfigError, match="is not inside the output folder"):
        guards.inside(str(root), "link", "checkpoint-1")


class _Stop(Exception):
    pass


def _spy(calls):
    def from_pretrained(*args, **kwargs):
        calls.append(kwargs)
        raise _Stop

    return from_pretrained


def test_trust_remote_code_is_off_unless_asked(workdir, monkeypatch):  # noqa: F811
    calls = []
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", _spy(calls))
    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", _spy(calls))
    model = str(workdir / "model")
    for load in (
        lambda: trainer(workdir / "a", model=model),  # AIHFTrainer(model=<path>)
        lambda: main(["train", "--config", str(workdir / "run.yaml"), "--output_dir", str(workdir / "b")]),
        lambda: load_reward_model(model, 0),
    ):
        with pytest.raises(_Stop):
            load()
    assert len(calls) == 3 and all(c.get("trust_remote_code", False) is False for c in calls), calls
    calls.clear()
    with pytest.raises(_Stop):
        main(
            ["train", "--config", str(workdir / "run.yaml"), "--output_dir", str(workdir / "c"), "--trust_remote_code"]
        )
    assert calls[0]["trust_remote_code"] is True


def test_yaml_config_cannot_run_code(workdir, capsys):  # noqa: F811
    marker = workdir / "pwned"
    text = (workdir / "run.yaml").read_text()
    (workdir / "evil.yaml").write_text(text + f"max_steps: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    status = main(["train", "--config", str(workdir / "evil.yaml"), "--output_dir", str(workdir / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "not valid YAML" in err[0], err
    assert not marker.exists() and not (workdir / "out").exists()
