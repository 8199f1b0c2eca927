"""``aihf bench llm --jobs 2`` killed (SIGKILL to the sweep's whole process group) at seeded random
moments and rerun: every run is done exactly once, no partial file counts, and the aggregates
equal those of an uninterrupted sweep."""

import glob
import json
import os
import random

import pytest

from tests.bench.test_llm import micro_argv
from tests.bench_kill import run_sweep
from tests.tasks.helpers import micro_base

RUNS = ["dpo__3__0.json", "dpo__6__0.json", "sft__0__0.json"]


def _rows(report: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("wall_seconds", "cpu_seconds")} for r in report["rows"]]


def _without_timing(result: dict) -> dict:
    out = {k: v for k, v in result.items() if k not in ("wall_seconds", "cpu_seconds", "command")}
    out["grid"] = [{k: v for k, v in p.items() if k != "train_seconds"} for p in result["grid"]]
    return out


@pytest.mark.slow
def test_llm_bench_survives_sigkill_of_the_sweep(tmp_path):
    base = micro_base(str(tmp_path / "base"))
    log = open(tmp_path / "sweeps.log", "w")

    def sweep(name):
        return ["aihf.bench.llm", *micro_argv(base, tmp_path / name, "--methods", "sft,dpo", "--jobs", "2")]

    assert run_sweep(sweep("reference"), log) == 0
    out, ref = tmp_path / "killed", tmp_path / "reference"
    started = lambda: bool(glob.glob(str(out / "tmp" / "*" / "point-0")))  # noqa: E731
    one_done = lambda: bool(glob.glob(str(out / "run_results" / "*.json"))) and started()  # noqa: E731
    rng = random.Random(5)
    kills = [  # (condition, seeded delay after it holds)
        (started, rng.uniform(0, 3)),  # during the first runs' training
        (one_done, rng.uniform(0, 2)),  # a run finished, another one under way
        (lambda: True, rng.uniform(1, 40)),  # any moment
    ]
    print(f"llm bench: kill delays {[round(d, 1) for _, d in kills]} s")
    landed = [run_sweep(sweep("killed"), log, kill_when=when, delay=d) is None for when, d in kills]
    assert landed[:2] == [True, True], landed
    assert run_sweep(sweep("killed"), log) == 0

    assert sorted(os.listdir(out / "run_results")) == RUNS  # none lost, no partial file left
    for name in RUNS:
        got = json.loads((out / "run_results" / name).read_text())
        expected = json.loads((ref / "run_results" / name).read_text())
        assert _without_timing(got) == _without_timing(expected), name
    report = json.loads((out / "results.json").read_text())
    reference = json.loads((ref / "results.json").read_text())
    assert report["runs_finished"] == report["runs_total"] == 3
    assert _rows(report) == _rows(reference)
    assert not os.path.exists(out / "tmp") or os.listdir(out / "tmp") == []  # no run's scratch folder left
