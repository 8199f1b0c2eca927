"""Resource limits of a control run, checked at start-up: the replay buffer must fit in the memory
available (one line, exit status 2) and the output folder's disk must hold two checkpoints (one
line, exit status 3, before the first save)."""

import shutil
from collections import namedtuple

import numpy as np
import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

from aihf.control import cli  # noqa: E402
from aihf.control.config import ControlConfig  # noqa: E402
from aihf.control.checkpoint import BUFFER_ARRAYS  # noqa: E402
from aihf.control.envs import replay_buffer_bytes  # noqa: E402
from aihf.control.trainer import ControlTrainer  # noqa: E402

from .helpers import ENV  # noqa: E402

SMALL = ["--rounds", "2", "--sac_steps_per_round", "100", "--learning_starts", "50", "--net_arch", "8"]
SMALL += ["--batch_size", "16", "--reward_net_arch", "8", "--eval_episodes", "1", "--progress", "false"]


@pytest.fixture(scope="module")
def data(pendulum_data):
    return pendulum_data(20)


def test_replay_buffer_estimate_equals_what_sb3_allocates(data, tmp_path):
    config = ControlConfig(
        env_id=ENV, demonstrations=str(data / "demos.npz"), output_dir=str(tmp_path), rounds=3,
        sac_steps_per_round=100, buffer_size=250, net_arch="8", progress=False,
    )  # fmt: skip
    trainer = ControlTrainer(config)
    trainer._build()
    buf = trainer.model.replay_buffer
    allocated = sum(getattr(buf, k).nbytes for k in BUFFER_ARRAYS)
    assert replay_buffer_bytes(config, trainer.env.observation_space, trainer.env.action_space) == allocated
    assert allocated == 250 * (2 * 3 * 4 + 1 * 4 + 3 * 4)  # Pendulum: 3 float32 observations, 1 action
    config.buffer_size = 10**6  # capped at the transitions the run will ever collect
    assert replay_buffer_bytes(config, trainer.env.observation_space, trainer.env.action_space) == 301 * 40


def test_a_replay_buffer_that_cannot_fit_in_memory_is_refused_in_one_line(data, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["train", "--env_id", ENV, "--demonstrations", str(data / "demos.npz"), "--output_dir", str(out)]
    huge = ["--buffer_size", str(10**13), "--rounds", str(10**6), "--sac_steps_per_round", str(10**8)]  # ~400 TB
    assert cli.main([*argv, *huge]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not out.exists()
    assert err.startswith(f"aihf control train: buffer_size={10**13} (from the flags): the replay buffer would need")
    assert err.endswith("available; lower buffer_size")


def test_too_little_disk_stops_the_run_before_its_first_checkpoint(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 4096, 4096))
    argv = ["train", "--env_id", ENV, "--demonstrations", str(data / "demos.npz"), "--output_dir", str(out), *SMALL]
    assert cli.main(argv) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"aihf control train: not enough disk space for {out}: 2 checkpoint(s) of about")
    assert not (out / "checkpoint").exists() and not (out / "checkpoint.tmp").exists()
    monkeypatch.undo()  # with the disk's real room the same run goes through
    assert cli.main(argv) == 0 and (out / "checkpoint" / "buffer.npz").exists()
    with np.load(out / "checkpoint" / "buffer.npz", allow_pickle=False) as saved:
        assert sum(saved[k].nbytes for k in BUFFER_ARRAYS) <= 201 * 40


def test_the_disk_check_counts_two_checkpoints_for_a_new_run_and_one_more_for_a_resumed_one(
    data, tmp_path, monkeypatch
):
    from aihf.llm import guards

    calls = []
    real = guards.check_disk_space
    monkeypatch.setattr(guards, "check_disk_space", lambda *a, **kw: calls.append((a, kw)) or real(*a, **kw))
    out = tmp_path / "out"
    argv = ["train", "--env_id", ENV, "--demonstrations", str(data / "demos.npz"), "--output_dir", str(out), *SMALL]
    assert cli.main([*argv, "--rounds", "1"]) == 0
    assert cli.main(argv) == 0  # resumes after round 1
    (folder, first), (_, second) = calls[0][0][:2], calls[1][0][:2]
    assert folder == str(out) and second - first == 100 * 40  # the buffer grows with rounds (1 -> 2)
    assert first > 101 * 40  # the full buffer and the weights
    assert [kw["count"] for _, kw in calls] == [2, 1]
