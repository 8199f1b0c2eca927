"""timing.cpu_s over sittings, and what a rerun says: resumed, finished, or from a checkpoint without cpu_s."""

import json

import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

from aihf.control import cli  # noqa: E402

from .helpers import ENV  # noqa: E402

NUM_PREFERENCES = 20  # the data_dir fixture's pairs (conftest.py)


def _argv(data_dir, out, rounds):
    argv = ["train", "--preset", "ci", "--env_id", ENV, "--method", "true_reward", "--rounds", str(rounds)]
    argv += ["--sac_steps_per_round", "150", "--learning_starts", "50", "--net_arch", "8", "--eval_episodes", "1"]
    argv += ["--final_eval_episodes", "1", "--progress", "false", "--output_dir", str(out)]
    return argv + ["--reference_returns", str(data_dir / "meta.json")]


def _set_checkpoint_cpu_s(out, value):
    """Rewrite the checkpoint's recorded CPU seconds (None: drop the key, as a checkpoint written before
    cpu_s existed)."""
    path = out / "checkpoint" / "meta.json"
    meta = json.loads(path.read_text())
    meta["timing"].pop("cpu_s")
    if value is not None:
        meta["timing"]["cpu_s"] = value
    path.write_text(json.dumps(meta))


def test_cpu_s_adds_the_earlier_sittings_and_a_finished_runs_rerun_trains_and_adds_nothing(
    data_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    assert cli.main(_argv(data_dir, out, 1)) == 0
    first = json.loads((out / "result.json").read_text())["timing"]["cpu_s"]
    assert 0 < first < 60
    _set_checkpoint_cpu_s(out, 1000.0)  # a large earlier sitting, so a reset or a double count shows
    capsys.readouterr()
    assert cli.main(_argv(data_dir, out, 2)) == 0  # --rounds may grow: the run continues
    assert f"resuming {out} after round 1 of 2 (150 env steps done)" in capsys.readouterr().err.splitlines()
    result = json.loads((out / "result.json").read_text())
    assert 1000.0 < result["timing"]["cpu_s"] < 1060.0
    # The same command again: the run is done; it says so, not "resuming", and its CPU seconds stay.
    assert cli.main(_argv(data_dir, out, 2)) == 0
    err = capsys.readouterr().err
    assert f"{out} has already run 2 of 2 rounds (300 env steps done): nothing left to train" in err
    assert "resuming" not in err
    again = json.loads((out / "result.json").read_text())
    # The checkpoint's value: the last checkpoint's own write (milliseconds here) is all that differs.
    assert result["timing"]["cpu_s"] - 1.0 < again["timing"]["cpu_s"] <= result["timing"]["cpu_s"]
    assert again["final"] == result["final"]


def test_a_checkpoint_without_cpu_s_records_no_cpu_s_rather_than_a_part(data_dir, tmp_path):
    out = tmp_path / "run"
    assert cli.main(_argv(data_dir, out, 1)) == 0
    _set_checkpoint_cpu_s(out, None)
    assert cli.main(_argv(data_dir, out, 2)) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["final"]["env_steps"] == 300
    assert "cpu_s" not in result["timing"]  # the bench report then counts it among the runs without it
