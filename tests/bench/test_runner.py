"""aihf.bench.runner, the job runner both benchmark sweeps use: resume (a finished run is skipped),
per-run locks (a run held elsewhere is skipped, not started twice), subprocess logs and failures,
in-process runs, and the default progress lines."""

import os
import re
import subprocess
import sys

from aihf.bench.runlock import try_lock_run
from aihf.bench.runner import Job, Reporter, run_jobs


def _writer(path, text="ok", code=0):
    """A command that writes ``text`` to ``path`` (unless it fails with ``code``)."""
    log = f"print('log of {os.path.basename(path)}')"
    if code:
        return [sys.executable, "-c", f"import sys; {log}; sys.exit({code})"]
    return [sys.executable, "-c", f"open({str(path)!r}, 'w').write({text!r}); {log}"]


class Recorder(Reporter):
    def __init__(self, total):
        super().__init__(total)
        self.events = []

    def skipped(self, job, why):
        self.events.append(("skipped", job.name, why))

    def started(self, job, running, queued, in_process):
        self.events.append(("started", job.name, in_process))

    def finished(self, job, seconds):
        self.events.append(("finished", job.name))

    def failed(self, job, returncode, log_path, seconds):
        self.events.append(("failed", job.name, returncode, os.path.basename(log_path)))


def test_subprocess_runs_resume_lock_and_failures(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    (res / "done.json").write_text("old")
    jobs = [
        Job("done", _writer(res / "done.json", "new"), str(res / "done.json")),
        Job("env/a", _writer(res / "a.json"), str(res / "a.json")),
        Job("held", _writer(res / "held.json"), str(res / "held.json")),
        Job("bad", _writer(res / "bad.json", code=3), str(res / "bad.json")),
        Job("b", _writer(res / "b.json"), str(res / "b.json")),
    ]
    locks, logs = tmp_path / "locks", tmp_path / "logs"
    holder = subprocess.Popen(  # an earlier sweep's run, still alive: it holds the lock of "held"
        [
            sys.executable,
            "-c",
            "import sys, time; from aihf.bench.runlock import try_lock_run; "
            "fd = try_lock_run(sys.argv[1]); print(fd is not None, flush=True); time.sleep(600)",
            str(locks / "held.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        reporter = Recorder(len(jobs))
        failed = run_jobs(jobs, 2, lock_dir=str(locks), log_dir=str(logs), poll_s=0.05, reporter=reporter)
    finally:
        holder.kill()
        holder.wait()
    assert failed == ["bad"]
    assert (res / "done.json").read_text() == "old"  # finished before: not run again
    assert (res / "a.json").read_text() == "ok" and (res / "b.json").read_text() == "ok"
    assert not (res / "held.json").exists() and not (res / "bad.json").exists()
    ev = reporter.events
    assert ("skipped", "done", "done") in ev and ("skipped", "held", "running") in ev
    assert ("failed", "bad", 3, "bad.log") in ev
    assert {e[1] for e in ev if e[0] == "finished"} == {"env/a", "b"}
    assert all(e[2] is False for e in ev if e[0] == "started")
    # One log per started run ('/' in a name becomes '__'); the output of the run is in it.
    assert sorted(os.listdir(logs)) == ["b.log", "bad.log", "env__a.log"]
    assert (logs / "env__a.log").read_text().strip() == "log of a.json"
    # Every lock is released once its run ended: a new sweep could take each one.
    for name in ("env/a", "b", "bad", "held"):
        fd = try_lock_run(str(locks / (name + ".lock")))
        assert fd is not None
        os.close(fd)


def test_in_process_runs_with_one_job_and_the_default_progress_lines(tmp_path, capsys):
    res, seen = tmp_path / "results", []

    def run(name):
        def go():
            # The run holds its lock while it runs: another sweep would skip it.
            assert try_lock_run(str(tmp_path / "locks" / (name + ".lock"))) is None
            seen.append(name)
            (res / (name + ".json")).write_text("ok")

        return go

    res.mkdir()
    jobs = [Job(n, ["false"], str(res / (n + ".json")), run_here=run(n)) for n in ("x", "y")]
    assert run_jobs(jobs, 1, lock_dir=str(tmp_path / "locks"), log_dir=str(tmp_path / "logs")) == []
    assert seen == ["x", "y"] and not (tmp_path / "logs").exists()  # nothing launched, no logs
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[1/2] running x" and out[2] == "[2/2] running y"
    assert re.fullmatch(r"\[1/2\] x done in \d+ s; elapsed \d+m\d\ds, ETA \d+m\d\ds", out[1]), out[1]
    assert re.fullmatch(r"\[2/2\] y done in \d+ s; elapsed \d+m\d\ds, ETA 0m00s", out[3]), out[3]
    # Resumed: both finished, nothing runs, nothing printed by the default reporter.
    seen.clear()
    assert run_jobs(jobs, 1, lock_dir=str(tmp_path / "locks"), log_dir=str(tmp_path / "logs")) == []
    assert seen == [] and capsys.readouterr().out == ""


_SWEEP = """
import sys
from aihf.bench.runner import Job, run_jobs
child = [sys.executable, "-c", "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)",
         sys.argv[1]]
run_jobs([Job("slow", child, sys.argv[2])], 2, lock_dir=sys.argv[3], log_dir=sys.argv[4], poll_s=0.05)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_a_sweep_stopped_by_sigterm_alone_stops_its_runs_and_frees_their_locks(tmp_path):
    """`kill <sweep pid>` (or a scheduler's SIGTERM) reaches the sweep's process only, not its runs: they
    used to keep running, holding their locks, so the next sweep skipped them as 'running elsewhere'."""
    import signal
    import time

    pid_file, locks = tmp_path / "child.pid", tmp_path / "locks"
    sweep = subprocess.Popen(
        [sys.executable, "-c", _SWEEP, str(pid_file), str(tmp_path / "r.json"), str(locks), str(tmp_path / "logs")],
        start_new_session=True,  # its own process group: the signal reaches the sweep and nothing else
    )
    try:
        for _ in range(400):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert _alive(child)
        sweep.send_signal(signal.SIGTERM)
        assert sweep.wait(timeout=60) != 0
        for _ in range(100):
            if not _alive(child):
                break
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    fd = try_lock_run(str(locks / "slow.lock"))
    assert fd is not None
    os.close(fd)


def test_a_run_that_ignores_sigint_is_killed_after_the_grace_period(tmp_path):
    import time

    from aihf.bench.runner import _stop

    ignoring = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(600)"]  # fmt: skip
    proc = subprocess.Popen(ignoring, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    log = open(tmp_path / "log", "w")
    t0 = time.time()
    _stop([(None, proc, log, t0)], grace_s=0.5)
    assert proc.returncode == -9 and log.closed and time.time() - t0 < 10


def test_an_interrupted_sweep_is_one_line_and_exit_130(monkeypatch, capsys):
    """Ctrl-C or SIGTERM (made a KeyboardInterrupt by run_jobs) of either sweep: one line saying how to
    continue, not a traceback."""
    import pytest

    import aihf.cli
    import aihf.cli.bench

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(aihf.cli.bench, "run", interrupted)
    assert aihf.cli.main(["bench", "llm", "--preset", "quick"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "aihf bench: interrupted: rerun the same command to continue: finished runs are skipped"
    pytest.importorskip("gymnasium")
    import aihf.control.bench

    monkeypatch.setattr(aihf.control.bench, "main", interrupted)
    assert aihf.cli.main(["control", "bench", "--preset", "ci"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "aihf control bench: interrupted: rerun the same command to continue: finished runs are skipped, "
        "stopped ones resume from their last finished round"
    )
