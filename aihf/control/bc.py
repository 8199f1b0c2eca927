"""Behaviour cloning, the baseline beside the AIHF loop (``--method bc``): a deterministic MLP
policy regressed on the demonstrations' actions, evaluated once at the end. Needs no
stable-baselines3."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from .config import ControlConfig, parse_sizes
from .data import Trajectories
from .envs import episode_summary, evaluate_episodes, normalized_score

__all__ = ["BCPolicy", "behaviour_cloning"]


class BCPolicy(nn.Module):
    """Deterministic MLP policy ``obs -> action``: standardised input, tanh output scaled to the bounds."""

    def __init__(self, observation_space, action_space, hidden):
        super().__init__()
        obs_dim, act_dim = int(np.prod(observation_space.shape)), int(np.prod(action_space.shape))
        sizes = [obs_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], act_dim), nn.Tanh())
        self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32).reshape(-1))
        self.register_buffer("high", torch.as_tensor(action_space.high, dtype=torch.float32).reshape(-1))
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("std", torch.ones(obs_dim))

    def set_normalization(self, obs: torch.Tensor) -> None:
        self.mean.copy_(obs.mean(0))
        self.std.copy_(obs.std(0).clamp_min(1e-3) if len(obs) > 1 else torch.ones_like(self.std))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.low + (self.net((obs - self.mean) / self.std) + 1) * (self.high - self.low) / 2

    def act(self, obs) -> np.ndarray:
        with torch.no_grad():
            return self.forward(torch.as_tensor(np.asarray(obs, np.float32).reshape(-1))).numpy()


def behaviour_cloning(
    config: ControlConfig,
    demos: Trajectories,
    env,
    rng: np.random.Generator,
    random_return: float | None,
    expert_return: float | None,
) -> tuple[BCPolicy, list[dict], dict]:
    """Train a ``net_arch`` :class:`BCPolicy` on ``demos`` (MSE on the actions, Adam, ``bc_steps``
    minibatches of ``batch_size`` rows drawn with ``rng``) and evaluate it on ``final_eval_episodes``
    episodes. Returns ``(policy, history, timing)``: a one-entry history (BC has no env-step
    learning curve) and the seconds spent training (``reward_s``) and evaluating (``eval_s``)."""
    c = config
    torch.manual_seed(c.seed)
    obs = torch.as_tensor(demos.observations)
    act = torch.as_tensor(demos.actions)
    policy = BCPolicy(env.observation_space, env.action_space, parse_sizes(c.net_arch))
    policy.set_normalization(obs)
    opt = torch.optim.Adam(policy.parameters(), lr=c.bc_learning_rate)
    t0 = time.perf_counter()
    loss = torch.zeros(())
    for _ in range(c.bc_steps):
        idx = torch.as_tensor(rng.integers(0, len(obs), min(c.batch_size, len(obs))))
        loss = ((policy(obs[idx]) - act[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - t0
    played = evaluate_episodes(policy.act, c.env_id, c.final_eval_episodes, c.seed + 1_000_000)
    history = [
        {
            "round": 1,
            "bc_steps": c.bc_steps,
            "env_steps": 0,
            "loss": loss.item(),
            **episode_summary(played),
            "normalized_return": normalized_score(played["returns"], random_return, expert_return),
            "episodes": c.final_eval_episodes,
        }
    ]
    return policy, history, {"sac_s": 0.0, "reward_s": train_s, "eval_s": time.perf_counter() - t0 - train_s}
