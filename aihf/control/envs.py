"""The env side of a control run: making the env, the replay buffer's memory check, evaluating a
policy by its ground-truth return, the normalised score (method.md, "Control specifics") and
JSON-safe results. Used by the AIHF loop (:mod:`aihf.control.trainer`), behaviour cloning
(:mod:`aihf.control.bc`), data collection and ``aihf control eval``; imports no
stable-baselines3."""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError
from .config import ControlConfig

__all__ = [
    "make_env",
    "replay_buffer_bytes",
    "check_memory",
    "evaluate_policy",
    "evaluate_episodes",
    "episode_summary",
    "normalized_score",
    "json_safe",
]


def make_env(env_id: str):
    import gymnasium as gym

    try:
        env = gym.make(env_id)
    except (gym.error.Error, ImportError, AttributeError, ValueError, TypeError) as e:
        # "module:Env-v0" ids import a module; a missing one must not become a traceback
        raise ConfigError(f"env_id={env_id!r}: {' '.join(str(e).split())}") from None
    if not isinstance(env.action_space, gym.spaces.Box) or not isinstance(env.observation_space, gym.spaces.Box):
        raise ConfigError(f"env_id={env_id!r}: needs Box observation and action spaces")
    return env


def replay_buffer_bytes(config: ControlConfig, observation_space, action_space) -> int:
    """Bytes of SAC's replay buffer once full: ``min(buffer_size, rounds * sac_steps_per_round + 1)``
    transitions of observation and next observation (the space's dtype), action (float32 for a
    float64 space, as SB3 stores it) and reward, done and time-out flags (float32)."""
    rows = min(config.buffer_size, config.rounds * config.sac_steps_per_round + 1)
    obs = int(np.prod(observation_space.shape)) * np.dtype(observation_space.dtype).itemsize
    act = int(np.prod(action_space.shape)) * min(4, np.dtype(action_space.dtype).itemsize)
    return rows * (2 * obs + act + 3 * 4)


def _available_memory() -> int | None:
    """Bytes of memory available now (psutil, else Linux's MemAvailable); None when unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_memory(config: ControlConfig, observation_space, action_space, source: str = "the flags") -> None:
    """Raise :class:`aihf.ConfigError` at start-up when the full replay buffer cannot fit in the
    memory available now (SB3 only warns, and the run would be killed hours later)."""
    need, free = replay_buffer_bytes(config, observation_space, action_space), _available_memory()
    if free is not None and need > free:
        raise ConfigError(
            f"buffer_size={config.buffer_size} (from {source}): the replay buffer would need {need / 2**30:.1f} GB "
            f"of memory ({observation_space.shape} observations), {free / 2**30:.1f} GB available; lower buffer_size"
        )


def evaluate_policy(act, env_id: str, episodes: int, seed: int) -> np.ndarray:
    """Ground-truth returns of ``episodes`` episodes of ``act(obs) -> action``, shape ``(episodes,)``."""
    return evaluate_episodes(act, env_id, episodes, seed)["returns"]


def evaluate_episodes(act, env_id: str, episodes: int, seed: int) -> dict[str, np.ndarray]:
    """``episodes`` episodes of ``act(obs) -> action`` (episode ``i`` reset with seed ``seed + i``).

    Returns arrays of shape ``(episodes,)``: ``returns`` (ground-truth reward summed), ``lengths``
    (steps until termination or truncation) and ``x_distance`` (the env's ``info["x_position"]`` at the
    end minus at the reset, in metres; NaN where the env reports no ``x_position``). On Hopper-v5 a
    1000-step episode with ``x_distance`` near 0 is a policy that stands still: its return (~1000, the
    healthy reward) says so only with the length and distance beside it.
    """
    env = make_env(env_id)
    returns, lengths, x_distance = np.zeros(episodes), np.zeros(episodes, dtype=np.int64), np.full(episodes, np.nan)
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        x0, done = info.get("x_position"), False
        while not done:
            obs, reward, terminated, truncated, info = env.step(act(obs))
            returns[i] += float(reward)
            lengths[i] += 1
            done = terminated or truncated
        if x0 is not None and "x_position" in info:
            x_distance[i] = float(info["x_position"]) - float(x0)
    env.close()
    return {"returns": returns, "lengths": lengths, "x_distance": x_distance}


def episode_summary(episodes: dict[str, np.ndarray]) -> dict:
    """The history's per-evaluation fields from :func:`evaluate_episodes`'s arrays (``x_distance_mean``
    only where the env reports positions)."""
    out = {
        "return_mean": float(episodes["returns"].mean()),
        "return_std": float(episodes["returns"].std()),
        "episode_length_mean": float(episodes["lengths"].mean()),
    }
    if np.isfinite(episodes["x_distance"]).all():
        out["x_distance_mean"] = float(episodes["x_distance"].mean())
    return out


def normalized_score(returns, random_return: float | None, expert_return: float | None):
    """``(R - R_random) / (R_expert - R_random)`` (method.md, "Control specifics"); NaN without references."""
    if random_return is None or expert_return is None or expert_return == random_return:
        return float("nan")
    return float((np.mean(returns) - random_return) / (expert_return - random_return))


def json_safe(value):
    """``value`` with NaN and infinities as ``None``: valid JSON (``null``) for jq and JavaScript, which
    reject the bare ``NaN`` Python's json writes. A normalised return is NaN when the data has no
    reference returns."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
