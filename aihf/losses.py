"""The AIHF objective as short pure tensor functions.

Every function takes per-example tensors of shape ``(B,)`` and an optional per-example weight
tensor of the same shape, and returns the scalar loss together with the per-example terms that
trainers log. A weighted loss is ``mean_i(w_i * l_i)``; without weights it is ``mean_i(l_i)``.

Equations are cited from ``shared/docs/method.md`` (copied to ``docs/method.md`` in this repo):

* **(U)** the upper level, ``L = w_D E_demos[log pi(yE|x)] + w_P E_prefs[log sigmoid(r(y+) - r(y-))]``;
* **(BT)** its preference term, the Bradley-Terry likelihood;
* **(ML-IRL)** the gradient's demonstration term, reward of the demonstration minus reward of a
  policy sample, and its logistic form (method.md, "Instantiations", 1);
* **(DPO)** the implicit-reward preference term, ``r = beta log(pi/pi_ref)`` ("Instantiations", 2);
* **(BT-label)** the synthetic labeller of the control experiments ("Control specifics"): the
  Bradley-Terry probability of a preference at a temperature scaled to the spread of returns;
* **(SP)** the self-play demonstration term against a frozen opponent ("Instantiations", 3).

Everything goes through ``logsigmoid`` so log-ratios of +/-1e4 stay finite.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "PairwiseLoss",
    "NLLLoss",
    "bradley_terry_loss",
    "dpo_loss",
    "demonstration_nll_loss",
    "self_play_loss",
    "ml_irl_linear_loss",
    "ml_irl_logistic_loss",
    "aihf_loss",
    "bradley_terry_preference_probability",
]


class PairwiseLoss(NamedTuple):
    """A loss over (preferred, dispreferred) pairs.

    ``chosen_rewards``/``rejected_rewards`` are the (implicit or explicit) rewards of the two
    sides, detached, for logging; ``margins = chosen - rejected`` and ``accuracy = margins > 0``.
    """

    loss: Tensor
    per_example: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor

    @property
    def margins(self) -> Tensor:
        return self.chosen_rewards - self.rejected_rewards


class NLLLoss(NamedTuple):
    """Negative log-likelihood of demonstrations.

    ``per_example`` is each sequence's summed NLL; ``normalizer`` is the (weighted) token count
    the scalar loss was divided by.
    """

    loss: Tensor
    per_example: Tensor
    normalizer: Tensor


def _check_pair(a: Tensor, b: Tensor, weights: Tensor | None, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} has shape {tuple(a.shape)} but {names[1]} has {tuple(b.shape)}")
    if a.dim() != 1:
        raise ValueError(f"{names[0]} must be a 1-D tensor of per-example values, got shape {tuple(a.shape)}")
    if weights is not None and weights.shape != a.shape:
        raise ValueError(f"weights has shape {tuple(weights.shape)}, expected {tuple(a.shape)}")


def _weighted_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    if weights is None:
        return values.mean()
    return (values * weights).mean()


def bradley_terry_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, weights: Tensor | None = None) -> PairwiseLoss:
    """Bradley-Terry loss on explicit rewards, method.md (BT):
    ``l_i = -log sigmoid(r(x, y+) - r(x, y-))``.
    """
    _check_pair(chosen_rewards, rejected_rewards, weights, ("chosen_rewards", "rejected_rewards"))
    per_example = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return PairwiseLoss(
        _weighted_mean(per_example, weights), per_example, chosen_rewards.detach(), rejected_rewards.detach()
    )


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    weights: Tensor | None = None,
) -> PairwiseLoss:
    """DPO (sigmoid) loss, method.md (DPO): (BT) with the implicit reward
    ``r(x, y) = beta * [log pi(y|x) - log pi_ref(y|x)]``, i.e.
    ``l_i = -log sigmoid(beta * ([lp+ - ref+] - [lp- - ref-]))``.

    Log-probs are summed over completion tokens. Rewards are returned as ``beta * log-ratio``,
    the quantities TRL logs as ``rewards/chosen`` and ``rewards/rejected``.
    """
    _check_pair(policy_chosen_logps, policy_rejected_logps, weights, ("policy_chosen_logps", "policy_rejected_logps"))
    _check_pair(ref_chosen_logps, ref_rejected_logps, None, ("ref_chosen_logps", "ref_rejected_logps"))
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    per_example = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return PairwiseLoss(
        _weighted_mean(per_example, weights),
        per_example,
        beta * chosen_logratios.detach(),
        beta * rejected_logratios.detach(),
    )


def demonstration_nll_loss(
    logps: Tensor,
    num_tokens: Tensor,
    weights: Tensor | None = None,
    normalizer: Tensor | float | None = None,
) -> NLLLoss:
    """Demonstration NLL, the demonstration term of method.md (U) under the implicit reward
    (AIHF-DPO): ``loss = -sum_i w_i log pi(yE_i|x_i) / sum_i w_i T_i``.

    ``logps`` are per-sequence sums of token log-probs and ``num_tokens`` (``T_i``) their
    completion token counts, so without weights this is the token-mean causal-LM loss on the
    completions (what ``AutoModelForCausalLM(labels=...)`` returns). ``normalizer`` replaces the
    denominator, e.g. by the token count of the whole global batch under data parallelism.
    """
    _check_pair(logps, num_tokens, weights, ("logps", "num_tokens"))
    w = torch.ones_like(logps) if weights is None else weights
    if normalizer is None:
        normalizer = (w * num_tokens.to(logps.dtype)).sum()
    normalizer = torch.as_tensor(normalizer, dtype=logps.dtype, device=logps.device)
    per_example = -logps
    loss = (w * per_example).sum() / normalizer.clamp_min(torch.finfo(logps.dtype).tiny)
    return NLLLoss(loss, per_example, normalizer)


def self_play_loss(
    policy_demo_logps: Tensor,
    policy_sample_logps: Tensor,
    opponent_demo_logps: Tensor,
    opponent_sample_logps: Tensor,
    beta: float,
    weights: Tensor | None = None,
) -> PairwiseLoss:
    """Self-play demonstration term, method.md (SP):
    ``l_i = -log sigmoid(beta*[lp(yE) - lp_t(yE)] - beta*[lp(y') - lp_t(y')])`` with
    ``y' ~ pi_t(.|x)`` and ``pi_t`` the policy frozen at the start of the round.

    This is exactly :func:`dpo_loss` with the demonstration as the preferred answer, the
    policy's own sample as the dispreferred one, and the opponent ``pi_t`` as reference.
    """
    return dpo_loss(policy_demo_logps, policy_sample_logps, opponent_demo_logps, opponent_sample_logps, beta, weights)


def ml_irl_linear_loss(demo_rewards: Tensor, sample_rewards: Tensor, weights: Tensor | None = None) -> PairwiseLoss:
    """Linear maximum-likelihood IRL term, method.md (ML-IRL): ``l_i = -(r(x, yE) - r(x, y'))``
    with ``y'`` a sample of the current policy. Its gradient is the demonstration half of the
    gradient of (U) (up to the 1/beta factor, which the reward scale absorbs).
    """
    _check_pair(demo_rewards, sample_rewards, weights, ("demo_rewards", "sample_rewards"))
    per_example = sample_rewards - demo_rewards
    return PairwiseLoss(
        _weighted_mean(per_example, weights), per_example, demo_rewards.detach(), sample_rewards.detach()
    )


def ml_irl_logistic_loss(demo_rewards: Tensor, sample_rewards: Tensor, weights: Tensor | None = None) -> PairwiseLoss:
    """Logistic form of the ML-IRL term, method.md (ML-IRL):
    ``l_i = -log sigmoid(r(x, yE) - r(x, y'))``, i.e. (BT) with the demonstration preferred
    over the policy's sample.
    """
    _check_pair(demo_rewards, sample_rewards, weights, ("demo_rewards", "sample_rewards"))
    return bradley_terry_loss(demo_rewards, sample_rewards, weights)


def aihf_loss(
    demo_term: Tensor | None,
    pref_term: Tensor | None,
    demo_weight: float,
    pref_weight: float,
) -> Tensor:
    """The weighted AIHF objective, method.md (U) as a loss: ``w_D * demo_term + w_P * pref_term``.

    A term whose weight is 0 is left out entirely (so it may be ``None``), which makes
    ``w_D = 0`` exactly the preference loss (DPO / Bradley-Terry) and ``w_P = 0`` exactly the
    demonstration loss (SFT / SPIN / ML-IRL).
    """
    if demo_weight < 0 or pref_weight < 0:
        raise ValueError(f"weights must be >= 0, got demo_weight={demo_weight}, pref_weight={pref_weight}")
    if demo_weight == 0 and pref_weight == 0:
        raise ValueError("at least one of demo_weight and pref_weight must be > 0")
    total = None
    for term, weight, name in ((demo_term, demo_weight, "demo_term"), (pref_term, pref_weight, "pref_term")):
        if weight == 0:
            continue
        if term is None:
            raise ValueError(f"{name} is None but its weight is {weight}")
        total = weight * term if total is None else total + weight * term
    return total


def bradley_terry_preference_probability(
    returns_a: Tensor, returns_b: Tensor, temperature: float, label_noise: float = 0.0
) -> Tensor:
    """Probability that a synthetic labeller prefers ``a`` over ``b``, method.md (BT-label):
    ``P(a > b) = (1 - eps) * sigmoid((R_a - R_b) / T) + eps / 2``.

    ``returns_*`` have shape ``(B,)`` (ground-truth returns of the two segments), ``T > 0`` is the
    temperature in return units and ``eps = label_noise`` in [0, 1] the chance that a label is a
    coin flip. Returns shape ``(B,)``.
    """
    _check_pair(returns_a, returns_b, None, ("returns_a", "returns_b"))
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {label_noise}")
    return (1.0 - label_noise) * torch.sigmoid((returns_a - returns_b) / temperature) + label_noise / 2.0
