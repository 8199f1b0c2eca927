"""``aihf control bench`` killed (SIGKILL to the sweep's whole process group) at seeded random
moments and rerun: every run is done exactly once and the table equals an uninterrupted sweep's."""

import glob
import json
import os
import random

import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

from aihf.control import bench  # noqa: E402
from tests.bench_kill import run_sweep  # noqa: E402

from .helpers import ENV, pendulum_dataset  # noqa: E402

TINY = (
    "--rounds 2 --sac_steps_per_round 200 --learning_starts 100 --net_arch 16,16 --batch_size 32 "
    "--reward_net_arch 16,16 --reward_batch_size 32 --reward_steps_per_round 3 --reward_pretrain_steps 5 "
    "--bc_steps 30 --eval_episodes 1 --final_eval_episodes 1"
)


def _sweep(tmp_path, name, data_root):
    return [
        "aihf.control.cli",
        "bench",
        "--preset",
        "ci",
        "--data_root",
        str(data_root),
        "--results",
        str(tmp_path / name / "results"),
        "--work",
        str(tmp_path / name / "work"),
        "--jobs",
        "2",
        "--train_flags",
        TINY,
    ]


def _without_timing(result: dict) -> dict:
    out = {k: v for k, v in result.items() if k not in ("timing", "config")}
    out["config"] = {k: v for k, v in result["config"].items() if k not in ("output_dir", "result_file")}
    return out


@pytest.mark.slow
def test_control_bench_survives_sigkill_of_the_sweep(tmp_path):
    data_root = tmp_path / "data"
    pendulum_dataset(data_root / ENV)  # its meta.json marks the data as collected
    runs = bench.plan("ci")
    log = open(tmp_path / "sweeps.log", "w")
    assert run_sweep(_sweep(tmp_path, "reference", data_root), log) == 0

    work, done = tmp_path / "killed" / "work" / ENV, tmp_path / "killed" / "results" / "run_results" / ENV
    checkpointed = lambda: bool(glob.glob(str(work / "*" / "checkpoint")))  # noqa: E731
    one_done = lambda: bool(glob.glob(str(done / "*.json"))) and checkpointed()  # noqa: E731
    rng = random.Random(3)
    kills = [  # (condition, seeded delay after it holds)
        (checkpointed, rng.uniform(0, 1)),  # runs under way, one past its first round
        (one_done, rng.uniform(0, 1)),  # a run finished, another one under way
        (lambda: True, rng.uniform(1, 20)),  # any moment
    ]
    print(f"control bench: kill delays {[round(d, 1) for _, d in kills]} s")
    landed = [
        run_sweep(_sweep(tmp_path, "killed", data_root), log, kill_when=when, delay=d) is None for when, d in kills
    ]
    assert landed[:2] == [True, True], landed
    assert run_sweep(_sweep(tmp_path, "killed", data_root), log) == 0

    folder = tmp_path / "killed" / "results" / "run_results" / ENV
    assert sorted(os.listdir(folder)) == sorted(r.name + ".json" for r in runs)  # none lost, no .tmp left
    for r in runs:
        got = json.loads((folder / f"{r.name}.json").read_text())
        expected = json.loads((tmp_path / "reference" / "results" / "run_results" / ENV / f"{r.name}.json").read_text())
        assert _without_timing(got) == _without_timing(expected), r.name  # resumed runs: same result
        assert [h["round"] for h in got["history"]] == ([1] if r.method == "bc" else [1, 2])
    summary = json.loads((tmp_path / "killed" / "results" / "results.json").read_text())
    reference = json.loads((tmp_path / "reference" / "results" / "results.json").read_text())
    assert summary["table"] == reference["table"]  # each run counted once, with its uninterrupted value
    assert len(summary["runs"]) == len(runs)
