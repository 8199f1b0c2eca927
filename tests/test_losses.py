"""aihf.losses: exact values, gradients against the written-out formulas, extremes, reductions."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aihf import losses

T = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731


def log1pexp(x: float) -> float:
    return math.log1p(math.exp(x))


# ---------------------------------------------------------------- exact values (hand-computed)
def test_bradley_terry_exact():
    out = losses.bradley_terry_loss(T(1.0, 0.0), T(0.0, 2.0))
    # -log sigmoid(1) = log(1 + e^-1); -log sigmoid(-2) = log(1 + e^2)
    assert out.per_example.tolist() == pytest.approx([0.31326168751822286, 2.1269280110429727], abs=1e-12)
    assert out.loss.item() == pytest.approx((0.31326168751822286 + 2.1269280110429727) / 2, abs=1e-12)
    assert out.margins.tolist() == [1.0, -2.0]


def test_bradley_terry_weights_multiply_then_average():
    out = losses.bradley_terry_loss(T(1.0, 0.0), T(0.0, 2.0), weights=T(2.0, 0.0))
    assert out.loss.item() == pytest.approx(2 * 0.31326168751822286 / 2, abs=1e-12)


def test_dpo_exact():
    # log-ratios: chosen -1 - (-1.5) = 0.5, rejected -2 - (-1.5) = -0.5; beta * (0.5 + 0.5) = 0.5
    out = losses.dpo_loss(T(-1.0), T(-2.0), T(-1.5), T(-1.5), beta=0.5)
    assert out.loss.item() == pytest.approx(0.47407698418010663, abs=1e-12)  # log(1 + e^-0.5)
    assert out.chosen_rewards.item() == pytest.approx(0.25)
    assert out.rejected_rewards.item() == pytest.approx(-0.25)
    assert out.margins.item() == pytest.approx(0.5)


def test_conservative_dpo_exact():
    # beta * d = 0.5 as above; eps = 0.1: 0.9 * log(1 + e^-0.5) + 0.1 * log(1 + e^0.5)
    out = losses.dpo_loss(T(-1.0), T(-2.0), T(-1.5), T(-1.5), beta=0.5, label_smoothing=0.1)
    assert out.loss.item() == pytest.approx(0.9 * log1pexp(-0.5) + 0.1 * log1pexp(0.5), abs=1e-12)
    assert out.margins.item() == pytest.approx(0.5)  # rewards do not depend on the loss
    # eps = 0.5: no information in the labels, the loss is symmetric in chosen/rejected
    half = losses.dpo_loss(T(-1.0), T(-2.0), T(-1.5), T(-1.5), beta=0.5, label_smoothing=0.5)
    assert half.loss.item() == pytest.approx(0.5 * (log1pexp(-0.5) + log1pexp(0.5)), abs=1e-12)


def test_robust_dpo_exact():
    out = losses.robust_dpo_loss(T(-1.0), T(-2.0), T(-1.5), T(-1.5), beta=0.5, label_smoothing=0.1)
    # [0.9 * log(1 + e^-0.5) - 0.1 * log(1 + e^0.5)] / 0.8
    assert out.loss.item() == pytest.approx((0.9 * log1pexp(-0.5) - 0.1 * log1pexp(0.5)) / 0.8, abs=1e-12)
    plain = losses.robust_dpo_loss(T(-1.0), T(-2.0), T(-1.5), T(-1.5), beta=0.5, label_smoothing=0.0)
    assert plain.loss.item() == pytest.approx(log1pexp(-0.5), abs=1e-12)
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.robust_dpo_loss(T(0.0), T(0.0), T(0.0), T(0.0), beta=0.5, label_smoothing=0.5)


def test_ipo_exact():
    # per-token log-ratios: chosen 0.5 / 2 tokens = 0.25, rejected -0.5 / 4 tokens = -0.125
    out = losses.ipo_loss(
        T(-1.0), T(-2.0), T(-1.5), T(-1.5), beta=0.5, chosen_num_tokens=T(2.0), rejected_num_tokens=T(4.0)
    )
    assert out.loss.item() == pytest.approx((0.375 - 1.0) ** 2, abs=1e-12)  # 1 / (2 beta) = 1
    assert out.chosen_rewards.item() == pytest.approx(0.25)  # beta * log-ratio, as for DPO
    with pytest.raises(ValueError, match="ipo"):
        losses.implicit_preference_loss("ipo", T(0.0), T(0.0), T(0.0), T(0.0), 0.5)


def test_hinge_exact():
    out = losses.hinge_loss(T(-1.0, -1.0), T(-2.0, -9.0), T(-1.5, -1.5), T(-1.5, -1.5), beta=0.5)
    # beta * d = 0.5 -> 1 - 0.5; beta * d = 4 -> 0
    assert out.per_example.tolist() == pytest.approx([0.5, 0.0], abs=1e-12)


def test_implicit_preference_loss_dispatches_by_trl_name():
    args = (T(-1.0), T(-2.0), T(-1.5), T(-1.5), 0.5)
    tokens = dict(chosen_num_tokens=T(2.0), rejected_num_tokens=T(4.0))
    assert losses.implicit_preference_loss("sigmoid", *args).loss == losses.dpo_loss(*args).loss
    assert losses.implicit_preference_loss("hinge", *args).loss == losses.hinge_loss(*args).loss
    assert losses.implicit_preference_loss("ipo", *args, **tokens).loss == losses.ipo_loss(*args, T(2.0), T(4.0)).loss
    robust = losses.implicit_preference_loss("robust", *args, label_smoothing=0.2).loss
    assert robust == losses.robust_dpo_loss(*args, label_smoothing=0.2).loss
    with pytest.raises(ValueError, match="loss_type"):
        losses.implicit_preference_loss("kto", *args)


def test_dpo_rejects_bad_beta_and_shapes():
    with pytest.raises(ValueError, match="beta"):
        losses.dpo_loss(T(0.0), T(0.0), T(0.0), T(0.0), beta=0.0)
    with pytest.raises(ValueError, match="shape"):
        losses.dpo_loss(T(0.0, 1.0), T(0.0), T(0.0), T(0.0), beta=0.1)
    with pytest.raises(ValueError, match="1-D"):
        losses.bradley_terry_loss(torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="weights"):
        losses.bradley_terry_loss(T(0.0, 1.0), T(0.0, 1.0), weights=T(1.0))


def test_demonstration_nll_exact():
    out = losses.demonstration_nll_loss(T(-2.0, -4.0), T(1.0, 3.0))
    assert out.loss.item() == pytest.approx(6.0 / 4.0)
    assert out.per_example.tolist() == [2.0, 4.0]
    assert out.normalizer.item() == 4.0
    weighted = losses.demonstration_nll_loss(T(-2.0, -4.0), T(1.0, 3.0), weights=T(1.0, 0.0))
    assert weighted.loss.item() == pytest.approx(2.0)
    fixed = losses.demonstration_nll_loss(T(-2.0, -4.0), T(1.0, 3.0), normalizer=8.0)
    assert fixed.loss.item() == pytest.approx(6.0 / 8.0)


def test_self_play_exact_and_equals_dpo_with_opponent_as_reference():
    out = losses.self_play_loss(T(-3.0), T(-5.0), T(-4.0), T(-4.0), beta=1.0)
    # beta*[(-3+4) - (-5+4)] = 2
    assert out.loss.item() == pytest.approx(log1pexp(-2.0), abs=1e-12)
    assert out.chosen_rewards.item() == 1.0 and out.rejected_rewards.item() == -1.0
    dpo = losses.dpo_loss(T(-3.0), T(-5.0), T(-4.0), T(-4.0), beta=1.0)
    assert torch.equal(out.per_example, dpo.per_example)


def test_ml_irl_linear_exact():
    out = losses.ml_irl_linear_loss(T(1.0, 2.0), T(0.5, 3.0))
    assert out.per_example.tolist() == [-0.5, 1.0]
    assert out.loss.item() == pytest.approx(0.25)
    assert out.margins.tolist() == [0.5, -1.0]


def test_ml_irl_logistic_exact():
    out = losses.ml_irl_logistic_loss(T(1.0), T(0.0))
    assert out.loss.item() == pytest.approx(0.31326168751822286, abs=1e-12)


def test_aihf_combination_exact():
    assert losses.aihf_loss(T(2.0)[0], T(3.0)[0], 0.5, 2.0).item() == pytest.approx(7.0)



# ---------------------------------------------------------------- the reward model's objective
# chosen (1, 0) vs rejected (0, 2): BT = (log(1 + e^-1) + log(1 + e^2)) / 2 = 1.2200948492805979
_BT = 1.2200948492805979


def test_reward_model_loss_exact_linear():
    out = losses.reward_model_loss(
        T(1.0, 0.0), T(0.0, 2.0), T(3.0, 1.0), T(0.5, 2.0), demo_weight=0.5, pref_weight=2.0
    )
    # demo term: mean(sample - demo) = mean(-2.5, 1.0) = -0.75; 0.5 * -0.75 + 2 * BT
    assert out.loss.item() == pytest.approx(2.0651896985611957, abs=1e-12)
    assert out.metrics == pytest.approx(
        {
            "loss_pref": _BT,
            "pref_accuracy": 0.5,
            "pref_margin": -0.5,
            "loss_demo": -0.75,
            "demo_accuracy": 0.5,
            "demo_margin": 0.75,
            "loss": 2.0651896985611957,
        },
        abs=1e-12,
    )
    assert out.demo.per_example.tolist() == [-2.5, 1.0]
    assert out.pref.margins.tolist() == [1.0, -2.0]


def test_reward_model_loss_exact_clamp_and_centring():
    kw = dict(demo_weight=0.5, pref_weight=2.0, reward_clamp=1.5)
    out = losses.reward_model_loss(T(1.0, 0.0), T(0.0, 2.0), T(3.0, 1.0), T(0.5, 2.0), **kw)
    # clamped to [-1.5, 1.5]: demo (1.5, 1.0), sample (0.5, 1.5): mean(-1.0, 0.5) = -0.25
    assert out.loss.item() == pytest.approx(0.5 * -0.25 + 2 * _BT, abs=1e-12)
    out = losses.reward_model_loss(
        T(1.0, 0.0), T(0.0, 2.0), T(3.0, 1.0), T(0.5, 2.0), center_rewards_coefficient=0.1, **kw
    )
    # centring over all four pairs, the clamped ones included: (1^2 + 2^2 + 2^2 + 2.5^2) / 4 = 3.8125
    assert out.loss.item() == pytest.approx(2.696439698561196, abs=1e-12)
    assert out.metrics["loss"] == pytest.approx(2.696439698561196, abs=1e-12)


def test_reward_model_loss_exact_logistic_ignores_the_clamp():
    kw = dict(demo_weight=0.5, pref_weight=2.0, demo_loss="logistic", reward_clamp=1.5)
    out = losses.reward_model_loss(T(1.0, 0.0), T(0.0, 2.0), T(3.0, 1.0), T(0.5, 2.0), **kw)
    # (log(1 + e^-2.5) + log(1 + e)) / 2 = 0.6960757109053862
    assert out.metrics["loss_demo"] == pytest.approx(0.6960757109053862, abs=1e-12)
    assert out.loss.item() == pytest.approx(2.788227554013889, abs=1e-12)


def test_reward_model_loss_terms_and_reductions():
    pref_only = losses.reward_model_loss(T(1.0, 0.0), T(0.0, 2.0), None, None, demo_weight=5.0, pref_weight=2.0)
    assert pref_only.demo is None and "loss_demo" not in pref_only.metrics
    assert pref_only.loss.item() == pytest.approx(2 * _BT, abs=1e-12)  # an absent term's weight is ignored
    demo_only = losses.reward_model_loss(None, None, T(3.0, 1.0), T(0.5, 2.0), demo_weight=1.0, pref_weight=2.0)
    assert demo_only.pref is None and demo_only.loss.item() == pytest.approx(-0.75)
    # a present term with weight 0 is computed (its metrics logged) but left out of the loss
    both = (T(1.0, 0.0), T(0.0, 2.0), T(3.0, 1.0), T(0.5, 2.0))
    off = losses.reward_model_loss(*both, demo_weight=0.0, pref_weight=1.0)
    assert off.loss.item() == pytest.approx(_BT, abs=1e-12) and off.metrics["loss_demo"] == -0.75
    with pytest.raises(ValueError, match="both be given"):
        losses.reward_model_loss(T(1.0), None, None, None, demo_weight=1.0, pref_weight=1.0)
    with pytest.raises(ValueError, match="both be given"):
        losses.reward_model_loss(None, None, None, T(1.0), demo_weight=1.0, pref_weight=1.0)
    with pytest.raises(ValueError, match="demo_loss"):
        losses.reward_model_loss(None, None, T(1.0), T(1.0), demo_weight=1.0, pref_weight=1.0, demo_loss="nll")
    with pytest.raises(ValueError, match="at least one"):
        losses.reward_model_loss(None, None, None, None, demo_weight=1.0, pref_weight=1.0)


@pytest.mark.parametrize(
    "demo_loss, clamp, center", [("linear", 1.5, None), ("linear", 1.5, 0.1), ("logistic", 1.5, 0.01)]
)
def test_reward_model_loss_equals_the_llm_rl_trainers_reward_loss(demo_loss, clamp, center):
    """AIHFRLTrainer.reward_loss (today's LLM reward step) scores its rows in the order
    [chosen | rejected | demonstrations | samples] and pairs each sample with its demonstration;
    fed the same scores, reward_model_loss gives the same loss and metrics."""
    from types import SimpleNamespace

    from aihf.llm.rl_trainer import AIHFRLTrainer

    # 2 pairs, 2 demonstrations with 1 and 2 samples: rows 0-1 chosen, 2-3 rejected, 4-5 demos, 6-8 samples
    scores = T(1.0, -0.5, 0.0, 2.0, 3.0, -2.0, 0.5, -1.0, 2.5)
    args = SimpleNamespace(
        demo_loss=demo_loss, reward_clamp=clamp, demo_weight=0.5, pref_weight=2.0, center_rewards_coefficient=center
    )
    stub = SimpleNamespace(args=args, _scores=lambda prompts, answers: scores)
    prefs = {"prompt_ids": [[1], [2]], "chosen_ids": [[3], [4]], "rejected_ids": [[5], [6]]}
    demos = {"prompt_ids": [[7], [8]], "completion_ids": [[9], [10]]}
    theirs, their_metrics = AIHFRLTrainer.reward_loss(stub, prefs, demos, [[[11]], [[12], [13]]])
    kw = dict(demo_weight=0.5, pref_weight=2.0, demo_loss=demo_loss, reward_clamp=clamp)
    demo_rows = scores[4:6][torch.tensor([0, 1, 1])]  # each sample paired with its demonstration
    ours = losses.reward_model_loss(
        scores[0:2], scores[2:4], demo_rows, scores[6:9], center_rewards_coefficient=center, **kw
    )
    assert ours.loss.item() == pytest.approx(theirs.item(), abs=1e-12)
    mine = {f"reward_model/{k}": v for k, v in ours.metrics.items()}
    assert mine == pytest.approx({k: v for k, v in their_metrics.items() if k != "reward_model/mean_reward"}, abs=1e-12)


# ---------------------------------------------------------------- reductions
def test_aihf_reductions():
    demo, pref = T(2.0)[0], T(3.0)[0]
    assert losses.aihf_loss(demo, pref, 0.0, 1.0).item() == 3.0  # w_D = 0: the DPO / BT value
    assert losses.aihf_loss(None, pref, 0.0, 1.0).item() == 3.0
    assert losses.aihf_loss(demo, pref, 1.0, 0.0).item() == 2.0  # w_P = 0: the demonstration term
    assert losses.aihf_loss(demo, None, 1.0, 0.0).item() == 2.0
    # a NaN in a switched-off term must not leak (0 * nan = nan)
    assert losses.aihf_loss(demo, torch.tensor(float("nan")), 1.0, 0.0).item() == 2.0


def test_aihf_combination_rejects_bad_weights():
    with pytest.raises(ValueError, match=">= 0"):
        losses.aihf_loss(T(1.0)[0], T(1.0)[0], -1.0, 1.0)
    with pytest.raises(ValueError, match="at least one"):
        losses.aihf_loss(T(1.0)[0], T(1.0)[0], 0.0, 0.0)
    with pytest.raises(ValueError, match="demo_term is None"):
        losses.aihf_loss(None, T(1.0)[0], 1.0, 1.0)


# ---------------------------------------------------------------- gradients vs the written-out formula
def _grads(fn, *inputs):
    inputs = [x.clone().requires_grad_(True) for x in inputs]
    return torch.autograd.grad(fn(*inputs), inputs)


@pytest.mark.parametrize("seed", range(3))
def test_gradients_match_written_out_formulas(seed):
    g = torch.Generator().manual_seed(seed)
    a, b, c, d, w = (torch.randn(5, generator=g, dtype=torch.float64) for _ in range(5))
    w = w.abs()
    beta = 0.3
    sig = lambda x: 1.0 / (1.0 + torch.exp(-x))  # noqa: E731
    cases = [
        (
            lambda a, b: losses.bradley_terry_loss(a, b, w).loss,
            lambda a, b: (-torch.log(sig(a - b)) * w).mean(),
            (a, b),
        ),
        (
            lambda a, b, c, d: losses.dpo_loss(a, b, c, d, beta, w).loss,
            lambda a, b, c, d: (-torch.log(sig(beta * ((a - c) - (b - d)))) * w).mean(),
            (a, b, c, d),
        ),
        (
            lambda a, b, c, d: losses.self_play_loss(a, b, c, d, beta).loss,
            lambda a, b, c, d: (-torch.log(sig(beta * (a - c) - beta * (b - d)))).mean(),
            (a, b, c, d),
        ),
        (lambda a, b: losses.ml_irl_linear_loss(a, b, w).loss, lambda a, b: (-(a - b) * w).mean(), (a, b)),
        (lambda a, b: losses.ml_irl_logistic_loss(a, b).loss, lambda a, b: (-torch.log(sig(a - b))).mean(), (a, b)),
        (
            lambda a: losses.demonstration_nll_loss(a, d.abs() + 1, w).loss,
            lambda a: -(w * a).sum() / (w * (d.abs() + 1)).sum(),
            (a,),
        ),
    ]
    for ours, formula, inputs in cases:
        for got, want in zip(_grads(ours, *inputs), _grads(formula, *inputs)):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- extremes
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("big", [1e4, -1e4])
def test_finite_at_extreme_log_ratios(big, dtype):
    x = torch.tensor([big, -big, 0.0], dtype=dtype)
    zero = torch.zeros(3, dtype=dtype)
    fns = [
        lambda x: losses.dpo_loss(x, zero, zero, zero, beta=0.1).loss,
        lambda x: losses.dpo_loss(zero, x, zero, x.flip(0), beta=1.0).loss,
        lambda x: losses.self_play_loss(x, -x, zero, zero, beta=1.0).loss,
        lambda x: losses.bradley_terry_loss(x, -x).loss,
        lambda x: losses.ml_irl_logistic_loss(x, -x).loss,
        lambda x: losses.ml_irl_linear_loss(x, -x).loss,
        lambda x: losses.demonstration_nll_loss(x, torch.ones(3, dtype=dtype)).loss,
    ]
    for fn in fns:
        (grad,) = _grads(fn, x)
        assert torch.isfinite(fn(x)) and torch.isfinite(grad).all()
    # the saturated side is exactly linear: -log sigmoid(-2e4) = 2e4
    bt = losses.bradley_terry_loss(torch.tensor([-1e4], dtype=dtype), torch.tensor([1e4], dtype=dtype))
    assert bt.loss.item() == pytest.approx(2e4)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=4, max_size=4), st.floats(0.01, 5.0))
def test_dpo_swap_identity(values, beta):
    """l(z) - l(-z) = -z for z = beta * (chosen log-ratio - rejected log-ratio)."""
    a, b, c, d = (torch.tensor([v], dtype=torch.float64) for v in values)
    fwd = losses.dpo_loss(a, b, c, d, beta).per_example
    rev = losses.dpo_loss(b, a, d, c, beta).per_example
    z = beta * ((a - c) - (b - d))
    torch.testing.assert_close(fwd - rev, -z, rtol=1e-9, atol=1e-9)
