"""Resource limits that can be predicted fail before the first step: the checkpoints a run will keep
are estimated against the free disk space; save_total_limit bounds what is kept."""

import os
from collections import namedtuple

import pytest

from aihf import TrainingError
from aihf.cli import main
from aihf.llm import AIHFRLTrainer, guards
from tests.cli.conftest import train as cli_train
from tests.cli.conftest import workdir  # noqa: F401  (a fixture)
from tests.llm import rl_task
from tests.llm.helpers import trainer

Usage = namedtuple("Usage", "total used free")


def _folder_bytes(folder):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


def _little_disk(monkeypatch, free):
    monkeypatch.setattr(guards.shutil, "disk_usage", lambda path: Usage(10 * free, 9 * free, free))


def _rl(tmp_path, **overrides):
    tok = rl_task.tokenizer()
    demos, prefs, _ = rl_task.make_data(n_demos=4, n_prefs=4, n_eval=2)
    args = rl_task.rl_args(
        tmp_path, per_device_train_batch_size=2, reward_batch_size=2, save_strategy="steps", save_steps=1, **overrides
    )
    return AIHFRLTrainer(rl_task.model(tok), args=args, demonstrations=demos, preferences=prefs, processing_class=tok)


def test_checkpoint_size_estimate_is_close_to_what_is_written(tmp_path):
    t = trainer(tmp_path, max_steps=1, save_strategy="steps", save_steps=1)
    t.train()
    written = _folder_bytes(tmp_path / "out" / "checkpoint-1")
    estimate = guards.checkpoint_bytes(t.model)
    assert 0.7 * written < estimate < 1.3 * written, (estimate, written)  # tokenizer, JSON files: a few KB

    r = _rl(tmp_path / "rl", num_rounds=1)
    r.train()
    written = _folder_bytes(tmp_path / "rl" / "out" / "checkpoint-1")
    estimate = sum(guards.checkpoint_bytes(m, full_model=False) for m in (r.policy, r.reward_model))
    assert 0.7 * written < estimate < 1.3 * written, (estimate, written)


def test_implicit_run_without_room_for_its_checkpoints_fails_before_the_first_step(tmp_path, monkeypatch):
    t = trainer(tmp_path, max_steps=6, save_strategy="steps", save_steps=2, save_total_limit=2)
    one = guards.checkpoint_bytes(t.model)
    _little_disk(monkeypatch, free=int(2.5 * one))  # room for 2 checkpoints; the run holds 3 at its peak
    with pytest.raises(TrainingError, match=r"^not enough disk space for .*: 3 checkpoint\(s\) of about .* free; "):
        t.train()
    assert t.state.global_step == 0 and _folder_bytes(tmp_path / "out") == 0
    _little_disk(monkeypatch, free=4 * one)
    t.train()  # fits
    assert sorted(os.listdir(tmp_path / "out")) == ["checkpoint-4", "checkpoint-6"]  # save_total_limit held


def test_rl_run_without_room_for_its_checkpoints_fails_before_the_first_round(tmp_path, monkeypatch):
    _little_disk(monkeypatch, free=1000)
    t = _rl(tmp_path, num_rounds=3, save_total_limit=1)
    with pytest.raises(TrainingError, match="not enough disk space"):
        t.train()
    assert t.round == 0 and _folder_bytes(tmp_path / "out") == 0
    monkeypatch.undo()
    t.train()
    assert sorted(os.listdir(tmp_path / "out")) == ["checkpoint-3"]  # save_total_limit=1 held


def test_cli_reports_too_little_disk_in_one_line_with_status_3(workdir, capsys, monkeypatch):  # noqa: F811
    _little_disk(monkeypatch, free=1000)
    capsys.readouterr()
    status = cli_train(workdir, workdir / "out", "--save_strategy", "steps", "--save_steps", "1")
    err = capsys.readouterr().err
    assert status == 3 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("aihf train: not enough disk space for ")
    assert main(["env"]) == 0
