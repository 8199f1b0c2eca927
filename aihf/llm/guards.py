"""Run guards shared by the trainers: non-finite values, disk space, paths that stay in the output folder.

A NaN or infinity in a loss term, a reward or a gradient is caught before the optimizer step it
would poison. By default the run stops with :class:`aihf.NonFiniteError`, one line naming the
step and the term; nothing has been written since the last checkpoint, which stays intact. With
``skip_nonfinite_steps=True`` the update is dropped instead (no weight or optimizer-state change;
the step counter and the learning-rate schedule advance), counted in ``nonfinite/skipped_steps``
and reported on stderr.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..errors import ConfigError, NonFiniteError, TrainingError

SKIP_HINT = "set skip_nonfinite_steps=True to skip such steps instead"


def nonfinite_terms(terms: dict[str, Tensor | float | None]) -> list[str]:
    """Names of the terms that hold a NaN or an infinity (``None`` terms are absent ones)."""
    bad = []
    for name, value in terms.items():
        if value is None:
            continue
        finite = bool(torch.isfinite(value).all()) if isinstance(value, Tensor) else math.isfinite(value)
        if not finite:
            bad.append(name)
    return bad


def nonfinite_gradient(named_params: Iterable[tuple[str, nn.Parameter]]) -> str | None:
    """The name of the first parameter whose gradient holds a NaN or an infinity, else None
    (one reduction over all gradients, so one device synchronisation in the usual case)."""
    named = [(n, p.grad) for n, p in named_params if p.grad is not None]
    if not named:
        return None
    norms = torch.stack([g.detach().float().norm() for _, g in named])
    bad = ~torch.isfinite(norms)
    if not bool(bad.any()):
        return None
    return named[int(bad.nonzero()[0])][0]


def describe(value: Tensor | float) -> str:
    """``nan``, ``inf`` or ``-inf``: what the first non-finite entry is."""
    t = torch.as_tensor(value).detach().float().flatten()
    bad = t[~torch.isfinite(t)]
    return str(bad[0].item()) if bad.numel() else "finite"


def nonfinite_error(where: str, what: str, last_checkpoint: str | None) -> NonFiniteError:
    kept = f"the last checkpoint, {last_checkpoint}, is intact" if last_checkpoint else "no checkpoint was written yet"
    return NonFiniteError(f"{where}: {what}; stopped before the update ({kept}); {SKIP_HINT}")


def report_skip(where: str, what: str, total: int) -> None:
    print(f"aihf: {where}: {what}: update skipped (skip_nonfinite_steps; {total} so far)", file=sys.stderr, flush=True)


def inside(root: str, *parts: str) -> str:
    """``os.path.join(root, *parts)``, refused with :class:`aihf.ConfigError` unless it stays in ``root``.

    Names of written files come from values read back from checkpoints (a step, a round); a
    tampered checkpoint must not make a run write outside its output folder.
    """
    path = os.path.join(root, *(str(p) for p in parts))
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root or real == real_root:
        raise ConfigError(f"refusing to write {path}: it is not inside the output folder {root}")
    return path


def check_int(value: object, name: str, source: str, minimum: int = 0) -> int:
    """A non-negative int read back from a checkpoint file, else :class:`aihf.ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{source}: '{name}' must be an integer >= {minimum}, got {value!r} (a damaged checkpoint?)")
    return value


def checkpoint_bytes(model: nn.Module, optimizer_states_per_param: int = 2, full_model: bool = True) -> int:
    """Estimated size of one checkpoint: the saved weights (all of them, or only the trainable
    ones for adapters) plus ``optimizer_states_per_param`` float32 tensors per trainable
    parameter (AdamW's two moments)."""
    trainable = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
    saved = sum(p.numel() * p.element_size() for p in model.parameters() if full_model or p.requires_grad)
    return saved + optimizer_states_per_param * trainable


def checkpoints_at_once(num_saves: int, save_total_limit: int | None) -> int:
    """How many checkpoints a run holds at its peak: all of them, or ``save_total_limit`` plus the
    one being written (the oldest is deleted only after the new one is complete)."""
    return min(num_saves, save_total_limit + 1) if save_total_limit else num_saves


def check_disk_space(folder: str, per_checkpoint: int, count: int) -> None:
    """Raise :class:`aihf.TrainingError` before the first save when ``folder``'s file system cannot
    hold ``count`` checkpoints of ``per_checkpoint`` bytes (with a 10% margin)."""
    if count < 1:
        return
    probe = os.path.abspath(folder)
    while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    total = int(per_checkpoint * count * 1.1)
    if total > free:
        raise TrainingError(
            f"not enough disk space for {folder}: {count} checkpoint(s) of about {_size(per_checkpoint)} need "
            f"{_size(total)}, {_size(free)} free; free some space, set save_total_limit, or save less often"
        )


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
