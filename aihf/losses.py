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
* **(SP)** the self-play demonstration term against a frozen opponent ("Instantiations", 3);
* **(L)** the lower level, KL-regularised RL ``max_pi E[r(x,y)] - beta KL(pi || pi_ref)``, optimised
  by AIHF-RL ("Instantiations", 1) with RLOO (Ahmadian et al. 2024, arXiv 2402.14740) or PPO-clip
  (Schulman et al. 2017, arXiv 1707.06347).

The preference term can also take the variants TRL's ``DPOTrainer`` offers under ``loss_type``:
conservative DPO (label smoothing), robust DPO, IPO and the hinge (SLiC) loss. Each cites its paper.

Everything goes through ``logsigmoid`` so log-ratios of +/-1e4 stay finite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "PairwiseLoss",
    "NLLLoss",
    "bradley_terry_loss",
    "PREFERENCE_LOSSES",
    "PREFERENCE_LOSS_TYPES",
    "PreferenceLossType",
    "label_smoothing_error",
    "dpo_loss",
    "robust_dpo_loss",
    "ipo_loss",
    "hinge_loss",
    "implicit_preference_loss",
    "wpo_weights",
    "demonstration_nll_loss",
    "self_play_loss",
    "ml_irl_linear_loss",
    "ml_irl_logistic_loss",
    "aihf_loss",
    "kl_penalty",
    "kl_regularized_rewards",
    "rloo_advantages",
    "whiten",
    "policy_gradient_loss",
    "clipped_policy_loss",
    "ClippedPolicyLoss",
    "center_rewards_loss",
    "RewardModelLoss",
    "reward_model_loss",
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


class PreferenceLossType(NamedTuple):
    """One entry of :data:`PREFERENCE_LOSSES`: the preference term under the implicit reward and what
    it needs. ``loss`` takes the four log-prob tensors and ``beta`` positionally, ``weights`` and
    (when asked for) ``label_smoothing``, ``chosen_num_tokens``/``rejected_num_tokens`` by keyword."""

    loss: Callable[..., PairwiseLoss]
    description: str  # for the ``loss_type`` help
    label_smoothing: tuple[float, bool] | None = None  # (upper bound, bound allowed); None: not taken
    needs_num_tokens: bool = False  # the completion token counts of both answers


# The preference loss types, by TRL's ``loss_type`` names: what losses, the trainer and the config
# checks read. A new type is one entry here (and its test).
PREFERENCE_LOSSES: dict[str, PreferenceLossType] = {
    "sigmoid": PreferenceLossType(dpo_loss, "DPO; conservative DPO with label_smoothing > 0", (0.5, True)),
    "robust": PreferenceLossType(robust_dpo_loss, "robust DPO", (0.5, False)),
    "ipo": PreferenceLossType(ipo_loss, "IPO, beta is its tau", needs_num_tokens=True),
    "hinge": PreferenceLossType(hinge_loss, "SLiC hinge on the reward margin"),
}
PREFERENCE_LOSS_TYPES = tuple(PREFERENCE_LOSSES)


def label_smoothing_error(loss_type: str, label_smoothing: float) -> str | None:
    """Why ``label_smoothing`` is not valid for ``loss_type`` (a key of :data:`PREFERENCE_LOSSES`), or None."""
    bound = PREFERENCE_LOSSES[loss_type].label_smoothing
    if bound is None:
        if not label_smoothing:
            return None
        return f"label_smoothing={label_smoothing} has no meaning for loss_type '{loss_type}'"
    upper, closed = bound
    if 0.0 <= label_smoothing < upper or (closed and label_smoothing == upper):
        return None
    interval = f"[0, {upper}{']' if closed else ')'}"
    return f"label_smoothing must be in {interval} for loss_type '{loss_type}', got {label_smoothing}"


def implicit_preference_loss(
    loss_type: str | Sequence[str],
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
    loss_weights: Sequence[float] | None = None,
) -> PairwiseLoss:
    """The preference term under the implicit reward, by TRL's ``loss_type`` name (a key of
    :data:`PREFERENCE_LOSSES`: ``"sigmoid"`` :func:`dpo_loss`, ``"robust"`` :func:`robust_dpo_loss`,
    ``"ipo"`` :func:`ipo_loss`, ``"hinge"`` :func:`hinge_loss`). Inputs ``(B,)``; ``label_smoothing``
    goes to the types that take it, the token counts are required by those that need them.

    A list of names is TRL's mix of loss types: ``l_i = sum_k loss_weights[k] * l_i^k`` (weights 1
    by default), e.g. MPO. Rewards are ``beta * log-ratio`` whatever the types.
    Raises ValueError for an unknown type, a missing input or weights of another length.
    """
    types = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    loss_weights = [1.0] * len(types) if loss_weights is None else list(loss_weights)
    if not types or len(loss_weights) != len(types):
        raise ValueError(f"loss_weights {loss_weights} must give one weight per loss type {types}")
    parts = []
    for name in types:
        spec = PREFERENCE_LOSSES.get(name)
        if spec is None:
            raise ValueError(f"loss_type must be one of {PREFERENCE_LOSS_TYPES}, got '{name}'")
        extra: dict = {"weights": weights}
        if spec.label_smoothing is not None:
            extra["label_smoothing"] = label_smoothing
        if spec.needs_num_tokens:
            if chosen_num_tokens is None or rejected_num_tokens is None:
                raise ValueError(f"loss_type '{name}' needs chosen_num_tokens and rejected_num_tokens")
            extra.update(chosen_num_tokens=chosen_num_tokens, rejected_num_tokens=rejected_num_tokens)
        logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
        parts.append(spec.loss(*logps, beta, **extra))
    if len(parts) == 1 and loss_weights[0] == 1.0:
        return parts[0]
    per_example = sum(w * part.per_example for w, part in zip(loss_weights, parts))
    return PairwiseLoss(
        _weighted_mean(per_example, weights), per_example, parts[0].chosen_rewards, parts[0].rejected_rewards
    )


def wpo_weights(logps: Tensor, log_sum_sq_probs: Tensor, num_tokens: Tensor) -> Tensor:
    """WPO's weight of each sequence (Zhou et al., "WPO: Enhancing RLHF with Weighted Preference
    Optimization", 2024, eq. 2, with the alignment of its section 3.2, as TRL's ``use_weighting``):
    ``exp(sum_t [log pi(y_t) - log sum_v pi(v)^2] / T)``, the policy's length-normalised
    probability of the sequence relative to its own sampling distribution. Inputs ``(B,)``: summed
    token log-probs, summed ``log sum_v p_v^2`` over the same tokens, token counts. No gradient."""
    return torch.exp((logps.detach() - log_sum_sq_probs) / num_tokens.to(logps.dtype).clamp_min(1))


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


def center_rewards_loss(first_rewards: Tensor, second_rewards: Tensor) -> Tensor:
    """Reward centring penalty ``mean_i (r_i1 + r_i2)^2`` over the pairs scored in a reward step
    (Eisenstein et al. 2023, arXiv 2312.09244; TRL's ``center_rewards_coefficient`` term).

    (BT) and (ML-IRL) only see reward differences, so without it the mean reward may drift;
    the penalty pins it near 0. Inputs ``(B,)``; a scalar out.
    """
    _check_pair(first_rewards, second_rewards, None, ("first_rewards", "second_rewards"))
    return ((first_rewards + second_rewards) ** 2).mean()


class RewardModelLoss(NamedTuple):
    """What :func:`reward_model_loss` returns: the scalar ``loss``; the two terms as
    :class:`PairwiseLoss` (``pref``: chosen vs rejected, ``demo``: demonstration vs sample, after any
    clamp), None where absent; ``metrics``, floats named ``loss``, ``loss_pref``, ``pref_accuracy``,
    ``pref_margin``, ``loss_demo``, ``demo_accuracy``, ``demo_margin`` (those of absent terms left out)."""

    loss: Tensor
    pref: PairwiseLoss | None
    demo: PairwiseLoss | None
    metrics: dict[str, float]


def reward_model_loss(
    chosen_rewards: Tensor | None,
    rejected_rewards: Tensor | None,
    demo_rewards: Tensor | None,
    sample_rewards: Tensor | None,
    *,
    demo_weight: float,
    pref_weight: float,
    demo_loss: str = "linear",
    reward_clamp: float | None = None,
    center_rewards_coefficient: float | None = None,
) -> RewardModelLoss:
    """The explicit reward model's objective, method.md (U) with an explicit reward ("Instantiations"
    1(c)): ``w_P * BT(r(chosen), r(rejected)) + w_D * ML-IRL(r(demo), r(sample))`` as a loss, plus
    ``center_rewards_coefficient * mean((r1 + r2)^2)`` over every scored pair when set.

    Args:
        chosen_rewards, rejected_rewards: ``(P,)`` rewards of the preferred and dispreferred sides
            (summed over a trajectory segment in control), or both None: no preference term.
        demo_rewards, sample_rewards: ``(S,)`` rewards of a demonstration and of a policy sample paired
            with it (repeat a demonstration's reward once per sample), or both None: no demonstration term.
        demo_weight, pref_weight: ``w_D``, ``w_P`` >= 0; an absent term's weight is ignored, a present
            term with weight 0 is left out of ``loss`` (as in :func:`aihf_loss`).
        demo_loss: ``"linear"`` (:func:`ml_irl_linear_loss`) or ``"logistic"`` (:func:`ml_irl_logistic_loss`).
        reward_clamp: with ``"linear"``, clamp both sides' rewards to ``[-c, c]`` first: the linear term
            is unbounded below (the authors' code clamps too); None for a reward bounded already.
        center_rewards_coefficient: weight of :func:`center_rewards_loss` over the preference pairs and
            the (clamped) demonstration/sample pairs together; None for none.

    Raises ``ValueError`` for one side of a pair without the other, no term present, an unknown
    ``demo_loss``, or bad weights.
    """
    if (chosen_rewards is None) != (rejected_rewards is None):
        raise ValueError("chosen_rewards and rejected_rewards must both be given or both be None")
    if (demo_rewards is None) != (sample_rewards is None):
        raise ValueError("demo_rewards and sample_rewards must both be given or both be None")
    if demo_loss not in ("linear", "logistic"):
        raise ValueError(f"demo_loss must be 'linear' or 'logistic', got {demo_loss!r}")
    metrics: dict[str, float] = {}
    pref = demo = None
    if chosen_rewards is not None:
        pref = bradley_terry_loss(chosen_rewards, rejected_rewards)
        metrics.update(
            loss_pref=pref.loss.item(),
            pref_accuracy=(pref.margins > 0).float().mean().item(),
            pref_margin=pref.margins.mean().item(),
        )
    if demo_rewards is not None:
        if demo_loss == "linear":
            if reward_clamp is not None:
                demo_rewards = demo_rewards.clamp(-reward_clamp, reward_clamp)
                sample_rewards = sample_rewards.clamp(-reward_clamp, reward_clamp)
            demo = ml_irl_linear_loss(demo_rewards, sample_rewards)
        else:
            demo = ml_irl_logistic_loss(demo_rewards, sample_rewards)
        metrics.update(
            loss_demo=demo.loss.item(),
            demo_accuracy=(demo.margins > 0).float().mean().item(),
            demo_margin=demo.margins.mean().item(),
        )
    loss = aihf_loss(
        demo.loss if demo is not None else None,
        pref.loss if pref is not None else None,
        demo_weight if demo is not None else 0.0,
        pref_weight if pref is not None else 0.0,
    )
    if center_rewards_coefficient is not None:
        pairs = [(chosen_rewards, rejected_rewards)] if pref is not None else []
        pairs += [(demo_rewards, sample_rewards)] if demo is not None else []
        first, second = torch.cat([a for a, _ in pairs]), torch.cat([b for _, b in pairs])
        loss = loss + center_rewards_coefficient * center_rewards_loss(first, second)
    metrics["loss"] = loss.item()
    return RewardModelLoss(loss, pref, demo, metrics)


# ---------------------------------------------------------------------------- lower level (L)


def kl_penalty(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """Sequence-level KL estimate of each sample, method.md (L):
    ``kl_i = log pi(y_i|x_i) - log pi_ref(y_i|x_i)`` for ``y_i ~ pi``.

    Its expectation over ``y ~ pi`` is ``KL(pi(.|x) || pi_ref(.|x))`` (the "k1" estimator). Inputs are
    per-sequence sums of completion-token log-probs, shape ``(B,)``; so is the output.
    """
    _check_pair(logps, ref_logps, None, ("logps", "ref_logps"))
    return logps - ref_logps


def kl_regularized_rewards(rewards: Tensor, logps: Tensor, ref_logps: Tensor, beta: float) -> Tensor:
    """The per-sample objective of method.md (L) with the KL folded into the reward:
    ``R_i = r(x_i, y_i) - beta * (log pi(y_i|x_i) - log pi_ref(y_i|x_i))``, shape ``(B,)``.

    The policy-gradient of ``E[R]`` (KL treated as part of the reward, as RLOO and TRL do) is
    the gradient of the lower level. ``beta = 0`` leaves the rewards unchanged.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    _check_pair(rewards, logps, None, ("rewards", "logps"))
    return rewards - beta * kl_penalty(logps, ref_logps)


def rloo_advantages(rewards: Tensor) -> Tensor:
    """REINFORCE leave-one-out advantages (Ahmadian et al. 2024, eq. 6), for method.md (L):
    ``A_ij = R_ij - mean_{l != j} R_il`` over the ``k`` samples ``j`` of prompt ``i``.

    ``rewards`` has shape ``(P, k)`` with ``k >= 2``; the result has the same shape. It equals
    ``k/(k-1) * (R_ij - mean_l R_il)`` and sums to 0 over each prompt's samples.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must have shape (prompts, k), got {tuple(rewards.shape)}")
    k = rewards.shape[1]
    if k < 2:
        raise ValueError(f"RLOO needs k >= 2 samples per prompt, got {k}")
    baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / (k - 1)
    return rewards - baseline


def whiten(values: Tensor, eps: float = 1e-8) -> Tensor:
    """``(v - mean(v)) / (std(v) + eps)`` over all elements, any shape.

    Used to whiten the rewards or the advantages of a batch (TRL's ``normalize_advantages``),
    with the population std; a single element becomes 0.
    """
    if values.numel() < 2:
        return values - values.mean()
    return (values - values.mean()) / (values.std(unbiased=False) + eps)


def policy_gradient_loss(logps: Tensor, advantages: Tensor) -> Tensor:
    """REINFORCE loss of method.md (L) for samples drawn from the current policy:
    ``loss = -mean_i A_i * log pi(y_i|x_i)``; its gradient is the score-function estimate of
    ``-grad E[R]`` (RLOO when ``A`` are :func:`rloo_advantages` of :func:`kl_regularized_rewards`).

    ``logps`` are per-sequence log-prob sums with gradients, ``advantages`` constants; both ``(B,)``.
    """
    _check_pair(logps, advantages, None, ("logps", "advantages"))
    return -(advantages.detach() * logps).mean()


class ClippedPolicyLoss(NamedTuple):
    """``loss``; ``clip_fraction``: share of completion tokens whose ratio was clipped; ``approx_kl``:
    mean per-token ``0.5 * (log ratio)^2`` between the current and the sampling policy."""

    loss: Tensor
    clip_fraction: Tensor
    approx_kl: Tensor


def clipped_policy_loss(
    token_logps: Tensor,
    old_token_logps: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    clip_range: float = 0.2,
) -> ClippedPolicyLoss:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7) with one advantage per sequence,
    for several updates on the same samples of method.md (L):

    ``rho_it = exp(lp_it - lp_old_it)``,
    ``loss = -mean_i sum_t m_it * min(rho_it A_i, clip(rho_it, 1-eps, 1+eps) A_i)``.

    Token terms are summed per sequence (not averaged), so that on the first update, where
    ``lp = lp_old`` and ``rho = 1``, the gradient equals :func:`policy_gradient_loss`'s exactly.
    Shapes: ``token_logps``, ``old_token_logps``, ``completion_mask`` ``(B, T)``; ``advantages`` ``(B,)``.
    """
    if token_logps.shape != old_token_logps.shape or token_logps.shape != completion_mask.shape:
        raise ValueError(
            f"token_logps {tuple(token_logps.shape)}, old_token_logps {tuple(old_token_logps.shape)} and "
            f"completion_mask {tuple(completion_mask.shape)} must have the same shape"
        )
    if advantages.shape != token_logps.shape[:1]:
        raise ValueError(f"advantages has shape {tuple(advantages.shape)}, expected ({token_logps.shape[0]},)")
    if clip_range <= 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range}")
    mask = completion_mask.to(token_logps.dtype)
    log_ratio = token_logps - old_token_logps.detach()
    ratio = torch.exp(log_ratio)
    adv = advantages.detach().unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range) * adv
    per_token = -torch.minimum(unclipped, clipped)
    loss = (per_token * mask).sum(1).mean()
    tokens = mask.sum().clamp_min(1.0)
    with torch.no_grad():
        was_clipped = (unclipped != clipped) & (per_token == -clipped)
        clip_fraction = (was_clipped.to(mask.dtype) * mask).sum() / tokens
        approx_kl = (0.5 * log_ratio.detach() ** 2 * mask).sum() / tokens
    return ClippedPolicyLoss(loss, clip_fraction, approx_kl)


def clip_ratios(
    token_logps: Tensor, old_token_logps: Tensor, advantages: Tensor, completion_mask: Tensor, clip_range: float
) -> tuple[Tensor, Tensor]:
    """TRL's ``clip_ratio/low_mean`` and ``clip_ratio/high_mean`` of :func:`clipped_policy_loss` (method.md (L)):
    the shares of completion tokens whose ratio ``rho`` is clipped from below (``rho < 1 - eps``, ``A < 0``)
    and from above (``rho > 1 + eps``, ``A > 0``). Shapes as in :func:`clipped_policy_loss`; scalars."""
    with torch.no_grad():
        mask = completion_mask.to(token_logps.dtype)
        ratio = torch.exp(token_logps - old_token_logps)
        adv = advantages.unsqueeze(1)
        low = ((ratio < 1.0 - clip_range) & (adv < 0)).to(mask.dtype)
        high = ((ratio > 1.0 + clip_range) & (adv > 0)).to(mask.dtype)
        tokens = mask.sum().clamp_min(1.0)
        return (low * mask).sum() / tokens, (high * mask).sum() / tokens


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
