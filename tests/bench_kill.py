"""Shared by the benchmark kill tests: run a sweep command in its own process group and SIGKILL
the whole group (the sweep and the runs it started) once a condition holds."""

import os
import signal
import subprocess
import sys
import time

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_sweep(argv: list[str], log, kill_when=None, delay: float = 0.0, timeout: float = 900) -> int | None:
    """``python -m <argv>``; returns its exit status, or None when it was killed: ``delay`` seconds
    after ``kill_when()`` first held (polled every 0.1 s), if it was still running then."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv], stdout=log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if kill_when is not None and kill_when():
            try:
                return proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                break
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    else:
        return proc.returncode
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert kill_when is not None, f"the sweep ran past {timeout} s"
    return None
