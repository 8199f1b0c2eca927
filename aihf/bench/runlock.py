"""Per-run locks of the benchmark sweeps (``aihf bench llm``, ``aihf control bench``).

A sweep takes an exclusive ``fcntl.flock`` on ``<run>.lock`` before it starts a run and hands
the locked descriptor to the run's process, then closes its own copy: the lock is then held by
the run for its lifetime, whatever happens to the sweep. A second sweep started while the run is
alive (after ``kill -9`` of the first sweep alone, say) finds the lock held and skips that run
instead of starting a second copy. The kernel drops the lock when the run's process exits, killed
or not, so a stale lock file never blocks a rerun. POSIX only (``fcntl``).
"""

from __future__ import annotations

import fcntl
import os


def try_lock_run(path: str) -> int | None:
    """Open and lock ``path`` (created with its folder); returns the locked descriptor, or None
    when another process holds the lock. Pass the descriptor to the run's process
    (``subprocess.Popen(..., pass_fds=(fd,))``) and close it here, or close it when an
    in-process run ends."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
