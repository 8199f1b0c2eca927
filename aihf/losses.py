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
* **(SP)** the self-play demonstration term against a frozen opponent ("Instantiations", 3).

The preference term can also take the variants TRL's ``DPOTrainer`` offers under ``loss_type``:
conservative DPO (label smoothing), robust DPO, IPO and the hinge (SLiC) loss. Each cites its paper.

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
    "PREFERENCE_LOSS_TYPES",
    "dpo_loss",
    "robust_dpo_loss",
    "ipo_loss",
    "hinge_loss",
    "implicit_preference_loss",
    "demonstration_nll_loss",
    "self_play_loss",
    "ml_irl_linear_loss",
    "ml_irl_logistic_loss",
    "aihf_loss",
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


def _logratios(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    weights: Tensor | None,
) -> tuple[Tensor, Tensor]:
    _check_pair(policy_chosen_logps, policy_rejected_logps, weights, ("policy_chosen_logps", "policy_rejected_logps"))
    _check_pair(ref_chosen_logps, ref_rejected_logps, None, ("ref_chosen_logps", "ref_rejected_logps"))
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return policy_chosen_logps - ref_chosen_logps, policy_rejected_logps - ref_rejected_logps


def _implicit_pairwise(per_example: Tensor, chosen: Tensor, rejected: Tensor, beta: float, weights) -> PairwiseLoss:
    """Rewards are ``beta * log-ratio`` whatever the loss: what TRL logs as ``rewards/*``."""
    return PairwiseLoss(
        _weighted_mean(per_example, weights), per_example, beta * chosen.detach(), beta * rejected.detach()
    )


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    weights: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> PairwiseLoss:
    """DPO (sigmoid) loss, method.md (DPO): (BT) with the implicit reward
    ``r(x, y) = beta * [log pi(y|x) - log pi_ref(y|x)]``, i.e.
    ``l_i = -log sigmoid(beta * ([lp+ - ref+] - [lp- - ref-]))``.

    With ``label_smoothing = eps > 0`` it is conservative DPO (cDPO; Mitchell, "A note on DPO with
    noisy preferences", 2023): each label is taken to be flipped with probability ``eps``,
    ``l_i = -(1 - eps) log sigmoid(beta d) - eps log sigmoid(-beta d)``.

    Log-probs are summed over completion tokens. Rewards are returned as ``beta * log-ratio``,
    the quantities TRL logs as ``rewards/chosen`` and ``rewards/rejected``.
    """
    chosen, rejected = _logratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, weights
    )
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing}")
    logits = beta * (chosen - rejected)
    per_example = -F.logsigmoid(logits)
    if label_smoothing:
        per_example = (1 - label_smoothing) * per_example - label_smoothing * F.logsigmoid(-logits)
    return _implicit_pairwise(per_example, chosen, rejected, beta, weights)


def robust_dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float,
    weights: Tensor | None = None,
) -> PairwiseLoss:
    """Robust DPO (rDPO; Chowdhury et al., "Provably Robust DPO", ICML 2024, eq. 9): the unbiased
    DPO loss when each label is flipped with known probability ``eps = label_smoothing < 1/2``,
    ``l_i = [-(1 - eps) log sigmoid(beta d) + eps log sigmoid(-beta d)] / (1 - 2 eps)``,
    ``d = [lp+ - ref+] - [lp- - ref-]``.
    """
    chosen, rejected = _logratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, weights
    )
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5) for robust DPO, got {label_smoothing}")
    logits = beta * (chosen - rejected)
    per_example = (-(1 - label_smoothing) * F.logsigmoid(logits) + label_smoothing * F.logsigmoid(-logits)) / (
        1 - 2 * label_smoothing
    )
    return _implicit_pairwise(per_example, chosen, rejected, beta, weights)


def ipo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    chosen_num_tokens: Tensor,
    rejected_num_tokens: Tensor,
    weights: Tensor | None = None,
) -> PairwiseLoss:
    """IPO (Azar et al., "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", AISTATS 2024, eq. 17) with ``tau = beta``:
    ``l_i = (d_i - 1 / (2 beta))^2`` where ``d_i`` is the difference of the *per-token* log-ratios,
    ``[lp+ - ref+] / T+ - [lp- - ref-] / T-`` (the length normalisation TRL uses, which the
    paper's authors confirmed; ``T`` counts completion tokens, at least 1).
    """
    chosen, rejected = _logratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, weights
    )
    _check_pair(chosen_num_tokens, rejected_num_tokens, None, ("chosen_num_tokens", "rejected_num_tokens"))
    per_token = chosen / chosen_num_tokens.to(chosen.dtype).clamp_min(1) - rejected / rejected_num_tokens.to(
        rejected.dtype
    ).clamp_min(1)
    per_example = (per_token - 1 / (2 * beta)) ** 2
    return _implicit_pairwise(per_example, chosen, rejected, beta, weights)


def hinge_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    weights: Tensor | None = None,
) -> PairwiseLoss:
    """Hinge loss on the implicit reward margin (SLiC; Zhao et al., "SLiC-HF", 2023, eq. 1, with
    ``delta = 1/beta``; as in RSO, Liu et al. 2024): ``l_i = max(0, 1 - beta d_i)``,
    ``d = [lp+ - ref+] - [lp- - ref-]``.
    """
    chosen, rejected = _logratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, weights
    )
    per_example = torch.relu(1 - beta * (chosen - rejected))
    return _implicit_pairwise(per_example, chosen, rejected, beta, weights)


PREFERENCE_LOSS_TYPES = ("sigmoid", "robust", "ipo", "hinge")


def implicit_preference_loss(
    loss_type: str,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    *,
    label_smoothing: float = 0.0,
    chosen_num_tokens: Tensor | None = None,
    rejected_num_tokens: Tensor | None = None,
    weights: Tensor | None = None,
) -> PairwiseLoss:
    """The preference term under the implicit reward, by TRL's ``loss_type`` name: ``"sigmoid"``
    (:func:`dpo_loss`, conservative with ``label_smoothing``), ``"robust"`` (:func:`robust_dpo_loss`),
    ``"ipo"`` (:func:`ipo_loss`, needs the completion token counts) or ``"hinge"`` (:func:`hinge_loss`).
    """
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    if loss_type == "sigmoid":
        return dpo_loss(*logps, weights=weights, label_smoothing=label_smoothing)
    if loss_type == "robust":
        return robust_dpo_loss(*logps, label_smoothing=label_smoothing, weights=weights)
    if loss_type == "ipo":
        if chosen_num_tokens is None or rejected_num_tokens is None:
            raise ValueError("loss_type 'ipo' needs chosen_num_tokens and rejected_num_tokens")
        return ipo_loss(*logps, chosen_num_tokens, rejected_num_tokens, weights=weights)
    if loss_type == "hinge":
        return hinge_loss(*logps, weights=weights)
    raise ValueError(f"loss_type must be one of {PREFERENCE_LOSS_TYPES}, got '{loss_type}'")


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
