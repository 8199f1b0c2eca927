"""The AIHF loop's SAC, on stable-baselines3's extension points (the way SB3's HER relabels goals):

* :class:`RelabelledReplayBuffer`, a ``ReplayBuffer`` whose minibatch rewards come from a reward
  function given through ``replay_buffer_kwargs={"reward_fn": ...}``, so that every reward SAC
  trains on is the current reward net's (the "replay-buffer relabelling" of docs/control.md);
* :class:`CheckedSAC`, SAC whose ``train()`` refuses a non-finite loss or action distribution with
  :class:`NonFiniteUpdate`, which the trainer turns into one :class:`aihf.NonFiniteError` line
  naming the round and env step.

This module imports stable-baselines3 (the ``control`` extra); import it only where SAC runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer

__all__ = ["RelabelledReplayBuffer", "CheckedSAC", "NonFiniteUpdate", "SAC_LOSSES"]

# The losses SB3's SAC logs after each call of train(); a NaN in one is where a bad update shows.
SAC_LOSSES = ("train/critic_loss", "train/actor_loss", "train/ent_coef_loss")


class RelabelledReplayBuffer(ReplayBuffer):
    """SB3's replay buffer whose minibatch rewards are ``reward_fn(observations, actions)``
    (tensors ``(B, obs_dim)`` and ``(B, act_dim)`` as stored, actions in SAC's [-1, 1] scale; it
    returns ``(B,)`` or ``(B, 1)``), called under ``torch.no_grad`` each time a minibatch is drawn.

    Relabelling at sampling time keeps every reward current with the latest reward net for the
    cost of one small MLP pass per minibatch; the stored env rewards stay untouched (and are what a
    minibatch holds while ``reward_fn`` is None).

    Args:
        buffer_size, observation_space, action_space, device, n_envs, optimize_memory_usage,
            handle_timeout_termination: as SB3's ``ReplayBuffer``.
        reward_fn: the relabelling function, passed by SAC from ``replay_buffer_kwargs``.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space,
        action_space,
        device: torch.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        reward_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
        )
        self.reward_fn = reward_fn

    def _get_samples(self, batch_inds, env=None):
        samples = super()._get_samples(batch_inds, env)
        if self.reward_fn is None:
            return samples
        with torch.no_grad():
            rewards = self.reward_fn(samples.observations, samples.actions).reshape(-1, 1)
        return samples._replace(rewards=rewards.to(samples.rewards.dtype))


class NonFiniteUpdate(Exception):
    """A SAC gradient update met a non-finite value; the message says which (one line)."""


class CheckedSAC(SAC):
    """SB3's SAC whose gradient updates stop at the first non-finite value.

    ``train()`` raises :class:`NonFiniteUpdate` when torch's check of the actor's
    ``Normal(mean, std)`` refuses non-finite parameters (where non-finite weights or inputs show
    first) or when a loss SB3 logs for the call (:data:`SAC_LOSSES`, the mean over its gradient
    steps) is NaN or infinite. Everything else is SB3's.
    """

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        try:
            super().train(gradient_steps, batch_size)
        except ValueError as e:
            if "invalid values" not in str(e):
                raise
            raise NonFiniteUpdate("SAC's action distribution has non-finite parameters") from None
        values = self.logger.name_to_value
        for term in SAC_LOSSES:
            if term in values and not math.isfinite(values[term]):
                raise NonFiniteUpdate(f"SAC's {term[len('train/') :]} is {values[term]}")
