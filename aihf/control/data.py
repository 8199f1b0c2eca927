"""Trajectories and preference pairs for control: the on-disk format, its validation, and the
synthetic Bradley-Terry labeller.

On-disk format (NumPy ``.npz``, read with ``allow_pickle=False``, so no file can run code)
-----------------------------------------------------------------------------------------
Trajectories (demonstrations, or a pool of rollouts), ``N`` steps in ``E`` episodes laid end to end:

=================  ===============  ===========================================================
key                shape, dtype     meaning
=================  ===============  ===========================================================
observations       (N, obs_dim) f   the observation at which each action was taken
actions            (N, act_dim) f   the action taken, inside the env's action bounds
episode_lengths    (E,) int         steps per episode, each >= 1, summing to N
rewards            (N,) f           optional: ground-truth reward of each step
=================  ===============  ===========================================================

Preferences, ``P`` pairs of segments of at most ``L`` steps (a segment may be a whole episode):

=========================  ===================  ================================================
key                        shape, dtype         meaning
=========================  ===================  ================================================
chosen_observations        (P, L, obs_dim) f    the preferred segment
chosen_actions             (P, L, act_dim) f
rejected_observations      (P, L, obs_dim) f    the dispreferred segment
rejected_actions           (P, L, act_dim) f
chosen_lengths             (P,) int, optional   valid steps of each segment (1..L); the rest is
rejected_lengths           (P,) int, optional   padding and ignored. Default: all L steps.
=========================  ===================  ================================================

Actions are in the env's units. Without ``*_lengths`` a segment whose last step is all zeros
(observation and action) is refused as padding the file does not mark: it would count as real steps.

Any other key is kept but ignored (``collect`` adds ``chosen_returns``/``rejected_returns`` and
the labeller's probabilities for inspection). A bad file raises :class:`aihf.DataError` naming
the file, the row (``episode 3`` / ``pair 5`` / ``row 17``) and the key.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError
from ..losses import bradley_terry_preference_probability

__all__ = [
    "Trajectories",
    "Preferences",
    "load_trajectories",
    "save_trajectories",
    "load_preferences",
    "load_preference_returns",
    "save_preferences",
    "label_preferences",
]


@dataclass
class Trajectories:
    """Episodes laid end to end; see the module docstring for shapes."""

    observations: np.ndarray
    actions: np.ndarray
    episode_lengths: np.ndarray
    rewards: np.ndarray | None = None

    @property
    def num_episodes(self) -> int:
        return len(self.episode_lengths)

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.episode_lengths)[:-1]]).astype(np.int64)

    def returns(self) -> np.ndarray:
        """Ground-truth return of each episode, shape ``(E,)``."""
        if self.rewards is None:
            raise ValueError("these trajectories have no rewards")
        return np.add.reduceat(self.rewards, self.starts) if len(self.rewards) else np.zeros(0)

    def episodes(self, indices) -> Trajectories:
        """The sub-collection of the given episodes (in that order)."""
        starts, lengths = self.starts, self.episode_lengths
        idx = np.concatenate([np.arange(starts[i], starts[i] + lengths[i]) for i in indices]).astype(np.int64)
        return Trajectories(
            self.observations[idx],
            self.actions[idx],
            lengths[list(indices)].copy(),
            None if self.rewards is None else self.rewards[idx],
        )


@dataclass
class Preferences:
    """``P`` (chosen, rejected) segment pairs, padded to ``L`` steps; see the module docstring."""

    chosen_observations: np.ndarray
    chosen_actions: np.ndarray
    rejected_observations: np.ndarray
    rejected_actions: np.ndarray
    chosen_lengths: np.ndarray
    rejected_lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.chosen_lengths)

    def subset(self, n: int) -> Preferences:
        """The first ``n`` pairs (pair files are written in random order, so this is a random subset)."""
        return Preferences(*(getattr(self, k)[:n] for k in self.__dataclass_fields__))


def _read_npz(path: str) -> dict[str, np.ndarray]:
    if os.path.isdir(path):
        raise DataError(str(path), None, None, "is a folder, not a .npz file")
    if not os.path.isfile(path):
        raise DataError(str(path), None, None, "no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.ndarray):  # np.load reads a .npy file as one bare array
            with loaded as f:
                return {k: f[k] for k in f.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError):
        # allow_pickle=False turns object arrays into a ValueError: we never unpickle data files, so
        # numpy's message (which suggests allow_pickle=True) is not passed on.
        raise DataError(
            str(path), None, None, "not a readable .npz file of numeric arrays (format: docs/control.md)"
        ) from None
    raise DataError(str(path), None, None, "a single .npy array, not a .npz file of named arrays (docs/control.md)")


def _require(data: dict, path: str, key: str, ndim: int) -> np.ndarray:
    if key not in data:
        present = ", ".join(sorted(data)) or "none"
        raise DataError(path, None, key, f"missing (keys present: {present})")
    value = data[key]
    if value.ndim != ndim:
        raise DataError(path, None, key, f"expected a {ndim}-D array, got shape {value.shape}")
    if value.dtype.kind not in "fiu":
        raise DataError(path, None, key, f"expected numbers, got dtype {value.dtype}")
    return value


def _check_finite(path: str, key: str, value: np.ndarray, row_name: str) -> None:
    bad = ~np.isfinite(value.reshape(len(value), -1)).all(axis=1) if len(value) else np.zeros(0, bool)
    if bad.any():
        raise DataError(path, f"{row_name} {int(np.argmax(bad))}", key, "contains NaN or infinity")


def _check_space(path, key, value, space, locate=None, valid=None):
    """The last dimension of ``value`` (``(N, dim)`` or ``(P, L, dim)``) matches ``space``; with
    ``locate(i, t) -> "episode 2, step 5"`` every entry (where ``valid``, a ``(P, L)`` mask, holds)
    also lies inside the space's bounds, give or take float32 rounding."""
    if space is None:
        return
    dim = int(np.prod(space.shape))
    if value.shape[-1] != dim:
        raise DataError(path, None, key, f"last dimension is {value.shape[-1]} but the env's space has {dim}")
    if locate is None:
        return
    flat = value.reshape(len(value), -1, dim)
    low, high = np.asarray(space.low, np.float64).reshape(-1), np.asarray(space.high, np.float64).reshape(-1)
    tol = 1e-5 * np.maximum(1.0, np.abs(high - low))
    bad = (flat < low - tol) | (flat > high + tol)
    if valid is not None:
        bad &= valid.reshape(len(value), -1)[..., None]
    if bad.any():
        i, t, d = (int(x) for x in np.argwhere(bad)[0])
        raise DataError(
            path,
            locate(i, t),
            key,
            f"{flat[i, t, d]:g} (dimension {d}) is outside the env's action bounds [{low[d]:g}, {high[d]:g}]; "
            "actions are in the env's units (docs/control.md, \"Data format\")",
        )


def load_trajectories(path: str, observation_space=None, action_space=None) -> Trajectories:
    """Read and validate a trajectory file; give the env's spaces to check dimensions and action bounds.

    Raises :class:`aihf.DataError` (file, row, key) on any problem.
    """
    path = str(path)
    data = _read_npz(path)
    if "observations" not in data and "chosen_observations" in data:
        raise DataError(path, None, "observations", "missing: this is a preference-pair file, not trajectories")
    obs = _require(data, path, "observations", 2)
    act = _require(data, path, "actions", 2)
    lengths = _require(data, path, "episode_lengths", 1)
    if lengths.dtype.kind not in "iu":
        raise DataError(path, None, "episode_lengths", f"expected integers, got dtype {lengths.dtype}")
    if len(lengths) == 0:
        raise DataError(path, None, "episode_lengths", "no episodes")
    if (lengths < 1).any():
        raise DataError(path, f"episode {int(np.argmax(lengths < 1))}", "episode_lengths", "must be >= 1")
    n = int(lengths.sum())
    for key, value in (("observations", obs), ("actions", act)):
        if len(value) != n:
            raise DataError(path, None, key, f"has {len(value)} rows but episode_lengths sum to {n}")
        _check_finite(path, key, value, "row")
    rewards = None
    if "rewards" in data:
        rewards = _require(data, path, "rewards", 1)
        if len(rewards) != n:
            raise DataError(path, None, "rewards", f"has {len(rewards)} rows but episode_lengths sum to {n}")
        _check_finite(path, "rewards", rewards, "row")
        rewards = rewards.astype(np.float32)
    _check_space(path, "observations", obs, observation_space)
    ends = np.cumsum(lengths)

    def locate(row: int, _: int) -> str:
        episode = int(np.searchsorted(ends, row, side="right"))
        return f"episode {episode}, step {row - int(ends[episode] - lengths[episode])} (row {row})"

    _check_space(path, "actions", act, action_space, locate)
    return Trajectories(obs.astype(np.float32), act.astype(np.float32), lengths.astype(np.int64), rewards)


def save_trajectories(path: str, trajectories: Trajectories, **extra: np.ndarray) -> None:
    """Write a trajectory file (atomically: a killed write leaves no half file)."""
    arrays = {
        "observations": trajectories.observations,
        "actions": trajectories.actions,
        "episode_lengths": trajectories.episode_lengths,
        **extra,
    }
    if trajectories.rewards is not None:
        arrays["rewards"] = trajectories.rewards
    _atomic_savez(path, arrays)


def load_preferences(path: str, observation_space=None, action_space=None) -> Preferences:
    """Read and validate a preference file. Raises :class:`aihf.DataError` (file, pair, key)."""
    path = str(path)
    data = _read_npz(path)
    if "chosen_observations" not in data and "observations" in data:
        raise DataError(path, None, "chosen_observations", "missing: this is a trajectory file, not preference pairs")
    arrays = {}
    for side in ("chosen", "rejected"):
        for what in ("observations", "actions"):
            arrays[f"{side}_{what}"] = _require(data, path, f"{side}_{what}", 3)
    shape = arrays["chosen_observations"].shape
    num_pairs, seg_len = shape[0], shape[1]
    if num_pairs == 0:
        raise DataError(path, None, "chosen_observations", "no pairs")
    for key, value in arrays.items():
        if value.shape[:2] != (num_pairs, seg_len):
            raise DataError(path, None, key, f"shape {value.shape} does not start with {(num_pairs, seg_len)}")
    for side in ("chosen", "rejected"):
        if arrays[f"{side}_observations"].shape[2] == 0:
            raise DataError(path, None, f"{side}_observations", "has no features")
        key = f"{side}_lengths"
        if key in data:
            lengths = _require(data, path, key, 1)
            if lengths.dtype.kind not in "iu" or len(lengths) != num_pairs:
                raise DataError(path, None, key, f"expected {num_pairs} integers, got {lengths.dtype} {lengths.shape}")
            bad = (lengths < 1) | (lengths > seg_len)
            if bad.any():
                raise DataError(path, f"pair {int(np.argmax(bad))}", key, f"must be between 1 and {seg_len}")
        else:
            _refuse_unmarked_padding(path, side, arrays[f"{side}_observations"], arrays[f"{side}_actions"])
            lengths = np.full(num_pairs, seg_len)
        arrays[key] = lengths.astype(np.int64)
    for key in ("chosen_observations", "chosen_actions", "rejected_observations", "rejected_actions"):
        value = arrays[key]
        mask = np.arange(seg_len)[None, :] < arrays[key.split("_")[0] + "_lengths"][:, None]
        _check_finite(path, key, np.where(mask[..., None], value, 0.0), "pair")
        if key.endswith("actions"):
            # Only the valid steps must respect the bounds; padding may hold anything finite.
            _check_space(path, key, value, action_space, lambda p, t: f"pair {p}, step {t}", mask)
        else:
            _check_space(path, key, value, observation_space)
        arrays[key] = np.where(mask[..., None], value, 0.0).astype(np.float32)
    return Preferences(**arrays)


def load_preference_returns(path: str, num_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """The true segment returns ``collect`` stores beside its pairs, ``(chosen_returns, rejected_returns)``,
    each ``(num_pairs,)`` float64. Raises :class:`aihf.DataError` (file, pair, key) for a file without
    them or with values that are not one finite number per pair."""
    path = str(path)
    data = _read_npz(path)
    out = []
    for key in ("chosen_returns", "rejected_returns"):
        if key not in data:
            raise DataError(path, None, key, "missing: the true returns that `aihf control collect` writes")
        value = _require(data, path, key, 1)
        if len(value) != num_pairs:
            raise DataError(path, None, key, f"{len(value)} values for {num_pairs} pairs")
        _check_finite(path, key, value, "pair")
        out.append(value.astype(np.float64))
    return out[0], out[1]


def _refuse_unmarked_padding(path: str, side: str, observations: np.ndarray, actions: np.ndarray) -> None:
    """Without ``<side>_lengths`` every one of the ``L`` steps counts in a segment's summed reward, so
    segments zero-padded to a common length would score their padding as real steps. A segment whose
    last step is all zeros (observation and action) is taken for padding and the file refused; a real
    all-zero last step passes once ``<side>_lengths`` says so (``L`` for a full segment)."""
    nonzero = lambda x: x.reshape(*x.shape[:2], -1).any(-1)  # noqa: E731  (P, L)
    zero = ~(nonzero(observations) | nonzero(actions))
    padded = zero[:, -1]
    if padded.any():
        p = int(np.argmax(padded))
        steps = int(np.argmin(zero[p, ::-1])) if not zero[p].all() else zero.shape[1]
        raise DataError(
            path,
            f"pair {p}",
            f"{side}_lengths",
            f"missing, but this {side} segment ends in {steps} all-zero step(s) (padding?), which would count "
            f"as real steps: add {side}_lengths, the valid steps of each segment (docs/control.md, \"Data format\")",
        )


def save_preferences(path: str, prefs: Preferences, **extra: np.ndarray) -> None:
    """Write a preference file (atomically)."""
    _atomic_savez(path, {**{k: getattr(prefs, k) for k in prefs.__dataclass_fields__}, **extra})


def _atomic_savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def label_preferences(
    pool: Trajectories,
    num_pairs: int,
    segment_length: int,
    rng: np.random.Generator,
    temperature_scale: float = 0.1,
    label_noise: float = 0.0,
    aligned: bool = False,
) -> tuple[Preferences, dict[str, np.ndarray]]:
    """Synthetic Bradley-Terry labeller (method.md, "Control specifics").

    Draws ``num_pairs`` pairs of segments of ``segment_length`` steps (the whole episode when it
    is shorter) from two different episodes of ``pool`` chosen uniformly, and labels the first as
    preferred with probability :func:`aihf.losses.bradley_terry_preference_probability` of their
    ground-truth segment returns, at temperature ``temperature_scale * std(segment returns of the
    pairs drawn)`` -- a temperature relative to the spread of returns, so labels are neither
    deterministic nor coin flips whatever the env's reward scale -- and label noise ``label_noise``.

    Each side's window starts at its own uniform step, or with ``aligned`` both start at one step
    ``t`` drawn uniformly from those where the shorter episode still has ``min(segment_length, its
    length)`` steps left, so the two segments cover the same time steps (as the paper authors'
    prototype compares states at aligned steps; the longer side keeps up to ``segment_length`` steps
    from ``t``). A ``segment_length`` of at least the episode length gives whole episodes either way.

    Returns the pairs and extras (``chosen_returns``, ``rejected_returns``, ``probabilities``: the
    probability that the chosen side is preferred; values < 0.5 are labelling mistakes).
    """
    if pool.rewards is None:
        raise ValueError("the pool needs ground-truth rewards to be labelled")
    if pool.num_episodes < 2:
        raise ValueError("the pool needs at least two episodes")
    starts, lengths = pool.starts, pool.episode_lengths
    obs_dim, act_dim = pool.observations.shape[1], pool.actions.shape[1]
    sides = {
        k: np.zeros((2, num_pairs, segment_length, d), np.float32) for k, d in (("obs", obs_dim), ("act", act_dim))
    }
    seg_lengths = np.zeros((2, num_pairs), np.int64)
    seg_returns = np.zeros((2, num_pairs))
    for p in range(num_pairs):
        episodes = rng.choice(pool.num_episodes, size=2, replace=False)
        if aligned:
            shortest = int(lengths[episodes].min())
            t = int(rng.integers(0, shortest - min(segment_length, shortest) + 1))
        for s, e in enumerate(episodes):
            if aligned:
                n, begin = min(segment_length, int(lengths[e]) - t), int(starts[e]) + t
            else:
                n = min(segment_length, int(lengths[e]))
                begin = int(starts[e]) + int(rng.integers(0, lengths[e] - n + 1))
            sides["obs"][s, p, :n] = pool.observations[begin : begin + n]
            sides["act"][s, p, :n] = pool.actions[begin : begin + n]
            seg_lengths[s, p] = n
            seg_returns[s, p] = pool.rewards[begin : begin + n].sum()
    temperature = max(temperature_scale * float(seg_returns.std()), 1e-8)
    probs = bradley_terry_preference_probability(
        torch.as_tensor(seg_returns[0]), torch.as_tensor(seg_returns[1]), temperature, label_noise
    ).numpy()
    first_wins = rng.random(num_pairs) < probs
    c = np.where(first_wins, 0, 1)
    r = 1 - c
    idx = np.arange(num_pairs)
    prefs = Preferences(
        sides["obs"][c, idx],
        sides["act"][c, idx],
        sides["obs"][r, idx],
        sides["act"][r, idx],
        seg_lengths[c, idx],
        seg_lengths[r, idx],
    )
    extras = {
        "chosen_returns": seg_returns[c, idx],
        "rejected_returns": seg_returns[r, idx],
        "probabilities": np.where(first_wins, probs, 1 - probs),
        "temperature": np.asarray(temperature),
    }
    return prefs, extras
