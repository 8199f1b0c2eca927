"""A second ``aihf control bench`` started while a run of the first is still alive (the first sweep
was killed alone, not its process group) skips that run instead of starting a second copy: each
run holds ``<results>/locks/<env>/<run>.lock`` for its lifetime (:mod:`aihf.bench.runlock`)."""

import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

from aihf.bench.runlock import try_lock_run  # noqa: E402
from aihf.control import bench  # noqa: E402
from tests.bench_kill import ENV as SUBPROCESS_ENV  # noqa: E402

from .helpers import ENV, pendulum_dataset  # noqa: E402

# A run long enough to outlive the second sweep (it is killed by the test).
LONG = "--rounds 1000 --sac_steps_per_round 200 --learning_starts 100 --net_arch 8 --batch_size 16 --eval_episodes 1"
RUN = bench.plan("ci")[0].name  # the first run of the ci plan


def _runs_of(results) -> list[int]:
    """Pids of live `aihf.control.cli train` processes writing to ``results``."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"train" in argv and any(str(results).encode() in a for a in argv):
            pids.append(int(pid))
    return pids


def test_a_second_sweep_does_not_start_a_run_still_alive_from_the_first(tmp_path, capsys):
    data_root, results = tmp_path / "data", tmp_path / "results"
    pendulum_dataset(data_root / ENV)  # its meta.json marks the data as collected
    argv = ["--preset", "ci", "--data_root", str(data_root), "--results", str(results), "--work", str(tmp_path / "w")]
    argv += ["--only", RUN, "--train_flags", LONG]
    first = subprocess.Popen(
        [sys.executable, "-m", "aihf.control.cli", "bench", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=SUBPROCESS_ENV,
        start_new_session=True,
    )
    orphans = []
    try:
        deadline = time.monotonic() + 120
        while not _runs_of(results):
            assert first.poll() is None and time.monotonic() < deadline, "the first sweep did not start its run"
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGKILL)  # the sweep alone: its run goes on
        first.wait()
        orphans = _runs_of(results)
        assert len(orphans) == 1

        assert bench.main(argv) == 0  # the second sweep
        out = capsys.readouterr()
        assert f"{ENV}/{RUN}: skipped, already running elsewhere" in out.out + out.err
        assert _runs_of(results) == orphans  # still one copy: the first sweep's
        assert try_lock_run(str(results / "locks" / ENV / (RUN + ".lock"))) is None
    finally:
        for pid in orphans or _runs_of(results):
            os.kill(pid, signal.SIGKILL)
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)
        first.wait()
    # The run's death releases the lock. A dying process's cmdline goes empty (its memory is freed)
    # before its files are closed, so poll the lock itself rather than the process list.
    lock, deadline, fd = str(results / "locks" / ENV / (RUN + ".lock")), time.monotonic() + 60, None
    while fd is None and time.monotonic() < deadline:
        fd = try_lock_run(lock)
        time.sleep(0.1)
    assert fd is not None
    os.close(fd)
