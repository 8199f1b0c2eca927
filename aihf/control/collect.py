"""``aihf control collect``: demonstrators, demonstrations, a mixed-quality pool and labelled pairs.

A SAC demonstrator is trained on the true reward; ``snapshots`` copies of its policy are kept
along the way (evenly spaced in env steps, so of increasing quality). Written to ``output_dir``:

* ``demos.npz``: ``num_demonstrations`` episodes of the final policy (deterministic);
* ``demos_low.npz``: as many episodes of the middle snapshot (the low-quality-demo setting);
* ``pool.npz``: stochastic episodes of every snapshot and of the uniform random policy, with rewards;
* ``preferences.npz``: ``num_preferences`` segment pairs from the pool, labelled by
  :func:`aihf.control.data.label_preferences`, in random order (runs take the first N);
* ``meta.json``: ``random_return``, ``expert_return`` (mean over ``eval_episodes``), the returns of
  each snapshot and of the low-quality demos, ``demonstrator_check``
  (:func:`aihf.control.references.check_demonstrator`) and the command that wrote the folder.

A demonstrator within noise of the random policy, or short of ``min_expert_fraction`` of the gap
from random to the env's reference return, is refused before anything is written
(``accept_weak_demonstrator`` keeps it, with a warning).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os

import numpy as np
import torch

from ..errors import ConfigError
from .config import CollectConfig, parse_sizes
from .data import Trajectories, label_preferences, save_preferences, save_trajectories
from .references import check_demonstrator
from .envs import evaluate_policy, make_env

__all__ = ["rollout", "collect", "write_dataset"]


def rollout(act, env_id: str, episodes: int, seed: int) -> Trajectories:
    """``episodes`` episodes of ``act(obs) -> action`` with their ground-truth rewards."""
    env = make_env(env_id)
    obs_rows, act_rows, rewards, lengths = [], [], [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, n = False, 0
        while not done:
            action = np.asarray(act(obs), dtype=np.float32).reshape(env.action_space.shape)
            action = np.clip(action, env.action_space.low, env.action_space.high)
            obs_rows.append(np.asarray(obs, np.float32).reshape(-1))
            act_rows.append(action.reshape(-1))
            obs, reward, terminated, truncated, _ = env.step(action)
            rewards.append(float(reward))
            done, n = terminated or truncated, n + 1
        lengths.append(n)
    env.close()
    return Trajectories(
        np.stack(obs_rows), np.stack(act_rows), np.asarray(lengths, np.int64), np.asarray(rewards, np.float32)
    )


def _concat(parts: list[Trajectories]) -> Trajectories:
    return Trajectories(
        np.concatenate([p.observations for p in parts]),
        np.concatenate([p.actions for p in parts]),
        np.concatenate([p.episode_lengths for p in parts]),
        np.concatenate([p.rewards for p in parts]),
    )


def write_dataset(config: CollectConfig, expert, low_quality, pool_policies: list, command: str = "") -> dict:
    """Roll out and label given policies (``act(obs, deterministic) -> action`` callables, in order
    of increasing quality in ``pool_policies``; a uniform random policy is added to the pool) and
    write the folder described in the module docstring. Returns the meta dict."""
    c = config.validate()
    env = make_env(c.env_id)
    space = env.action_space
    rng = np.random.default_rng(c.seed)
    random_act = lambda o: rng.uniform(space.low, space.high).astype(np.float32)
    pool_parts, snapshot_returns = [], []
    for k, policy in enumerate([random_act, *[lambda o, p=p: p(o, False) for p in pool_policies]]):
        part = rollout(policy, c.env_id, c.pool_episodes_per_snapshot, c.seed + 10_000 * (k + 1))
        pool_parts.append(part)
        snapshot_returns.append(float(part.returns().mean()))
    pool = _concat(pool_parts)
    demos = rollout(lambda o: expert(o, True), c.env_id, c.num_demonstrations, c.seed + 1)
    demos_low = rollout(lambda o: low_quality(o, True), c.env_id, c.num_demonstrations, c.seed + 2)
    random_returns = evaluate_policy(random_act, c.env_id, c.eval_episodes, c.seed + 3)
    expert_returns = evaluate_policy(lambda o: expert(o, True), c.env_id, c.eval_episodes, c.seed + 4)
    check = check_demonstrator(c.env_id, random_returns, expert_returns, c.min_expert_fraction)
    if check["verdict"] == "refused" and not c.accept_weak_demonstrator:
        raise ConfigError(
            f"{check['message']}: nothing written; train it longer (--expert_steps) or keep it with "
            "--accept_weak_demonstrator true"
        )
    aligned = c.segment_alignment == "aligned"
    prefs, extras = label_preferences(
        pool, c.num_preferences, c.segment_length, rng, c.temperature_scale, c.label_noise, aligned
    )
    os.makedirs(c.output_dir, exist_ok=True)
    save_trajectories(os.path.join(c.output_dir, "demos.npz"), demos)
    save_trajectories(os.path.join(c.output_dir, "demos_low.npz"), demos_low)
    save_trajectories(os.path.join(c.output_dir, "pool.npz"), pool)
    save_preferences(os.path.join(c.output_dir, "preferences.npz"), prefs, **extras)
    meta = {
        "env_id": c.env_id,
        "random_return": float(random_returns.mean()),
        "expert_return": float(expert_returns.mean()),
        "demo_returns": demos.returns().tolist(),
        "low_quality_demo_returns": demos_low.returns().tolist(),
        "pool_returns_by_policy": snapshot_returns,
        "label_accuracy": float((extras["chosen_returns"] >= extras["rejected_returns"]).mean()),
        "temperature": float(extras["temperature"]),
        "demonstrator_check": check,
        "config": dataclasses.asdict(c),
        "command": command,
    }
    # meta.json last and atomically: the benchmark takes a folder with it as complete.
    path = os.path.join(c.output_dir, "meta.json")
    with open(path + ".tmp", "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(path + ".tmp", path)
    return meta


def collect(config: CollectConfig, command: str = "") -> dict:
    """Train the SAC demonstrator on the true reward, keep snapshots, and :func:`write_dataset`."""
    from stable_baselines3 import SAC
    from tqdm.auto import tqdm

    c = config.validate()
    torch.set_num_threads(c.torch_threads)
    env = make_env(c.env_id)
    model = SAC(
        "MlpPolicy",
        env,
        batch_size=c.batch_size,
        train_freq=c.train_freq,
        learning_starts=min(10_000, c.expert_steps // 10),
        policy_kwargs={"net_arch": parse_sizes(c.net_arch)},
        seed=c.seed,
        device="cpu",
        verbose=0,
    )
    snapshots = []
    chunk = max(1, c.expert_steps // c.snapshots)
    for _ in tqdm(range(c.snapshots), desc=f"demonstrator {c.env_id}", disable=not c.progress):
        model.learn(chunk, reset_num_timesteps=False)
        snapshots.append(copy.deepcopy(model.policy.actor).eval())

    def as_act(actor):
        def act(obs, deterministic):
            with torch.no_grad():
                x = torch.as_tensor(np.asarray(obs, np.float32)[None])
                return actor(x, deterministic=deterministic)[0].numpy()  # squashed to [-1, 1]

        return act

    low, high = env.action_space.low, env.action_space.high

    def unscale(act):
        return lambda o, d: low + (act(o, d) + 1.0) * (high - low) / 2.0

    policies = [unscale(as_act(a)) for a in snapshots]
    return write_dataset(c, policies[-1], policies[(len(policies) - 1) // 2], policies, command)
