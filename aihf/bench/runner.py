"""The job runner of the benchmark sweeps (``aihf bench llm``, ``aihf control bench``).

A sweep is a list of :class:`Job`: a command that writes one result file. :func:`run_jobs` runs
them ``parallel`` at a time as subprocesses (each with one thread per BLAS/OpenMP pool and its
output in ``<log_dir>/<name>.log``), or one by one in this process for jobs that can
(``run_here``, with ``parallel == 1``). Resuming is skipping: a job whose result file exists is
not started. Each job holds ``<lock_dir>/<name>.lock`` for its lifetime (:mod:`aihf.bench.runlock`),
so a second sweep skips a run still alive from a first one. What happens is told to a
:class:`Reporter`; the default prints a progress line with an ETA. A sweep stopped by Ctrl-C or
SIGTERM stops its runs too (a signal sent to the sweep's process alone would otherwise leave them
running, holding their locks). Imports only the standard library.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .runlock import try_lock_run

__all__ = ["Job", "Reporter", "run_jobs", "format_seconds"]


@dataclass
class Job:
    """One run of a sweep.

    Args:
        name: unique label; may hold ``/`` (a lock subfolder; ``__`` in the log file's name).
        argv: the command that does the run, as for ``subprocess.Popen``.
        result_file: the file the run writes last; it exists once the run finished.
        run_here: does the run in this process instead (used when ``parallel == 1``); None for none.
    """

    name: str
    argv: list[str]
    result_file: str
    run_here: Callable[[], object] | None = None


def format_seconds(s: float) -> str:
    """``12m05s``."""
    return f"{int(s // 60)}m{int(s % 60):02d}s"


class Reporter:
    """What a sweep says as it goes; override any method. The default prints, flushed, one line per
    event: a run skipped because its lock is held, started, done (with elapsed time and an ETA from
    the mean time per finished run so far) or failed. A run found finished is skipped silently."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.time()

    def skipped(self, job: Job, why: str) -> None:
        """``why``: ``"running"`` (its lock is held elsewhere) or ``"done"`` (its result file exists)."""
        if why == "running":
            print(f"skipped {job.name}: already running elsewhere (its lock is held)", flush=True)

    def started(self, job: Job, running: int, queued: int, in_process: bool) -> None:
        if in_process:
            print(f"[{self.done + 1}/{self.total}] running {job.name}", flush=True)
        else:
            print(f"started {job.name} ({running} running, {queued} queued)", flush=True)

    def finished(self, job: Job, seconds: float) -> None:
        self.done += 1
        elapsed = time.time() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        print(
            f"[{self.done}/{self.total}] {job.name} done in {seconds:.0f} s; elapsed {format_seconds(elapsed)}, "
            f"ETA {format_seconds(eta)}",
            flush=True,
        )

    def failed(self, job: Job, returncode: int, log_path: str, seconds: float) -> None:
        print(f"FAILED {job.name} (exit {returncode}); see {log_path}", flush=True)

    def close(self) -> None:
        """Called once at the end."""


def run_jobs(
    jobs: list[Job],
    parallel: int,
    *,
    lock_dir: str,
    log_dir: str,
    env: dict[str, str] | None = None,
    poll_s: float = 0.5,
    reporter: Reporter | None = None,
) -> list[str]:
    """Run ``jobs`` in order, ``parallel`` at a time, skipping those finished or locked elsewhere.
    Returns the names of the subprocess runs that exited with a non-zero status; an exception of an
    in-process run propagates (its lock released). ``env``: extra environment variables of the
    subprocesses, on top of this process's and ``OMP_NUM_THREADS=MKL_NUM_THREADS=1``."""
    reporter = reporter or Reporter(len(jobs))
    child_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    queue, running, failed = list(jobs), [], []
    # SIGTERM (a scheduler's or `kill`'s stop) ends this process without cleanup by default: make it a
    # KeyboardInterrupt, so the runs are stopped as on Ctrl-C and the CLI says so in one line.
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if on_main_thread else None
    try:
        while queue or running:
            while queue and len(running) < parallel:
                job = queue.pop(0)
                fd = _lock(job, lock_dir, reporter)
                if fd is None:
                    continue
                if parallel == 1 and job.run_here is not None:
                    reporter.started(job, 1, len(queue), in_process=True)
                    t0 = time.time()
                    try:
                        job.run_here()
                    finally:
                        os.close(fd)
                    reporter.finished(job, time.time() - t0)
                    continue
                os.makedirs(log_dir, exist_ok=True)
                log = open(os.path.join(log_dir, job.name.replace("/", "__") + ".log"), "w")
                try:  # the run inherits the locked descriptor and holds the lock until it exits
                    proc = subprocess.Popen(
                        job.argv, stdout=log, stderr=subprocess.STDOUT, env=child_env, pass_fds=(fd,)
                    )
                finally:
                    os.close(fd)
                running.append((job, proc, log, time.time()))
                reporter.started(job, len(running), len(queue), in_process=False)
            if not running:
                continue
            time.sleep(poll_s)
            for item in [r for r in running if r[1].poll() is not None]:
                running.remove(item)
                job, proc, log, t0 = item
                log.close()
                if proc.returncode != 0:
                    failed.append(job.name)
                    reporter.failed(job, proc.returncode, log.name, time.time() - t0)
                else:
                    reporter.finished(job, time.time() - t0)
    except BaseException:
        _stop(running)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        reporter.close()
    return failed


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _stop(running: list, grace_s: float = 30.0) -> None:
    """Stop the runs still going when the sweep is interrupted. A terminal's Ctrl-C already reached
    them (same process group): give them a moment to exit on their own, then send SIGINT to those
    left (a run then stops as on Ctrl-C and resumes later from its last checkpoint) and SIGKILL to
    any still alive after ``grace_s`` seconds."""
    procs = [item[1] for item in running]
    deadline = time.time() + 2.0
    while any(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(0.05)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.time() + grace_s
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for item in running:
        item[2].close()


def _lock(job: Job, lock_dir: str, reporter: Reporter) -> int | None:
    """The job's lock (held by the run for its lifetime), or None to skip it: a copy from an earlier
    sweep is still running, or it finished (its result file is checked once the lock is held)."""
    fd = try_lock_run(os.path.join(lock_dir, job.name + ".lock"))
    if fd is None:
        reporter.skipped(job, "running")
        return None
    if os.path.isfile(job.result_file):
        os.close(fd)
        reporter.skipped(job, "done")
        return None
    return fd
