"""Shared by the benchmark kill tests: run a sweep command in its own process group and SIGKILL
the whole group (the sweep and the runs it started) after a delay."""

import os
import signal
import subprocess
import sys

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_sweep(argv: list[str], log, kill_after: float | None = None, timeout: float = 600) -> int | None:
    """``python -m <argv>``; returns its exit status, or None when it was killed after ``kill_after`` s."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv], stdout=log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True
    )
    try:
        return proc.wait(timeout=kill_after if kill_after is not None else timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if kill_after is None:
            raise
        return None
