"""The learned reward for control: an MLP over the state (or state and action) with normalised
inputs and a bounded output (method.md, "Control specifics": state-only 2x64 MLP, output within
+/-10), and the loss of one reward step on it (:func:`reward_loss`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .. import losses

__all__ = ["RewardNet", "segment_returns", "env_actions", "RewardBatch", "reward_loss"]


class RewardNet(nn.Module):
    """``r(s)`` or ``r(s, a)``: ``bound * tanh(mlp(normalise(x)) / bound)``.

    Actions are in the env's units (inside ``action_space.low .. high``), as the data files hold
    them; SAC's replay buffer stores them rescaled to [-1, 1], so the trainer maps those back with
    :func:`env_actions` before they reach the net.

    ``tanh`` rather than the authors' hard clamp keeps a gradient at the bound. Inputs are
    standardised with a fixed mean and std (``set_normalization``, from the training data), stored
    as buffers so they travel with ``state_dict``.

    Args:
        obs_dim, act_dim: sizes of the flat observation and action.
        hidden: hidden layer sizes, e.g. ``(64, 64)``.
        use_actions: ``True`` for ``r(s, a)``, ``False`` for the state-only ``r(s)``.
        bound: the output lies in ``(-bound, bound)``.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden=(64, 64), use_actions: bool = False, bound: float = 10.0):
        super().__init__()
        self.use_actions, self.bound = use_actions, float(bound)
        in_dim = obs_dim + (act_dim if use_actions else 0)
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(in_dim, h), nn.ReLU()]
            in_dim = h
        layers.append(nn.Linear(in_dim, 1))
        self.mlp = nn.Sequential(*layers)
        self.register_buffer("mean", torch.zeros(obs_dim + (act_dim if use_actions else 0)))
        self.register_buffer("std", torch.ones(obs_dim + (act_dim if use_actions else 0)))

    def set_normalization(self, observations: np.ndarray, actions: np.ndarray | None = None) -> None:
        """Standardise inputs with the mean and std of these rows (std floored at 1e-3)."""
        x = observations if not self.use_actions else np.concatenate([observations, actions], axis=-1)
        x = torch.as_tensor(x, dtype=torch.float32).reshape(-1, self.mean.shape[0])
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-3) if len(x) > 1 else torch.ones_like(self.std))

    def forward(self, observations: Tensor, actions: Tensor | None = None) -> Tensor:
        """Rewards of shape ``observations.shape[:-1]``."""
        x = torch.cat([observations, actions], dim=-1) if self.use_actions else observations
        out = self.mlp((x - self.mean) / self.std).squeeze(-1)
        return self.bound * torch.tanh(out / self.bound)


def segment_returns(rewards: Tensor, lengths: Tensor) -> Tensor:
    """Sum of per-step rewards ``(P, L)`` over the first ``lengths[p]`` steps of each segment: ``(P,)``.

    These are the ``r(x, y)`` of a trajectory in method.md (BT).
    """
    mask = torch.arange(rewards.shape[1], device=rewards.device)[None, :] < lengths[:, None]
    return (rewards * mask).sum(1)


def env_actions(scaled: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """SAC's actions in [-1, 1] (what SB3 stores in its replay buffer) in the env's units:
    ``low + (scaled + 1) * (high - low) / 2``, shapes ``(..., act_dim)`` with ``low``/``high`` ``(act_dim,)``.

    The reward net sees every action in env units (demonstrations, preference segments, replay
    samples): on an env whose bounds are not [-1, 1] (Pendulum +/-2) mixing the two scales would let
    the reward tell demonstrations from samples by scale alone.
    """
    return low + (scaled + 1.0) * (high - low) / 2


@dataclass
class RewardBatch:
    """Tensors for one reward step. Demo/sample sides: ``(B, obs_dim)``/``(B, act_dim)``; preference
    sides: ``(P, L, obs_dim)``/``(P, L, act_dim)`` with valid lengths ``(P,)``. Absent parts are None."""

    demo_obs: Tensor | None = None
    demo_act: Tensor | None = None
    sample_obs: Tensor | None = None
    sample_act: Tensor | None = None
    chosen_obs: Tensor | None = None
    chosen_act: Tensor | None = None
    chosen_len: Tensor | None = None
    rejected_obs: Tensor | None = None
    rejected_act: Tensor | None = None
    rejected_len: Tensor | None = None


def reward_loss(
    net: RewardNet, batch: RewardBatch, demo_weight: float, pref_weight: float, grad_norms=False, demo_loss="linear"
):
    """The reward's loss, method.md (U) as in "Instantiations" 1(c):
    ``w_D * ML-IRL(r(demo states), r(policy states)) + w_P * BT(R(chosen), R(rejected))``
    with ``R`` a segment's summed reward and ML-IRL the linear or the logistic form (``demo_loss``;
    :func:`aihf.losses.reward_model_loss`; no clamp, the net's output is bounded already). A term whose
    weight is 0 is not computed. Returns ``(loss, logs)``.

    With ``grad_norms`` the logs also hold ``reward/grad_norm_demo`` and ``reward/grad_norm_pref``:
    the L2 norm over the net's parameters of each weighted term's gradient, ``||grad(w_D * demo)||``
    and ``||grad(w_P * pref)||`` (so doubling a weight doubles its norm), from two extra backward
    passes; docs/control.md, "Balance of the two terms".
    """
    demo = sample = chosen = rejected = None
    if demo_weight > 0:
        demo, sample = net(batch.demo_obs, batch.demo_act), net(batch.sample_obs, batch.sample_act)
    if pref_weight > 0:
        chosen = segment_returns(net(batch.chosen_obs, batch.chosen_act), batch.chosen_len)
        rejected = segment_returns(net(batch.rejected_obs, batch.rejected_act), batch.rejected_len)
    out = losses.reward_model_loss(
        chosen, rejected, demo, sample, demo_weight=demo_weight, pref_weight=pref_weight, demo_loss=demo_loss
    )
    logs: dict[str, float] = {}
    if out.demo is not None:
        logs["demo/reward_expert"] = out.demo.chosen_rewards.mean().item()
        logs["demo/reward_policy"] = out.demo.rejected_rewards.mean().item()
    if out.pref is not None:
        logs.update({"loss/pref": out.metrics["loss_pref"], "rewards/accuracies": out.metrics["pref_accuracy"]})
    if grad_norms:
        params = [p for p in net.parameters() if p.requires_grad]
        for name, term, weight in (("demo", out.demo, demo_weight), ("pref", out.pref, pref_weight)):
            if term is not None:
                grads = torch.autograd.grad(weight * term.loss, params, retain_graph=True, allow_unused=True)
                norm = torch.sqrt(sum((g.detach() ** 2).sum() for g in grads if g is not None))
                logs[f"reward/grad_norm_{name}"] = float(norm)
    if out.demo is not None:
        logs["loss/demo"] = out.metrics["loss_demo"]
    logs["loss"] = out.metrics["loss"]
    return out.loss, logs
