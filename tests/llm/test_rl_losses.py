"""The AIHF-RL lower-level losses against hand-computed values and written-out formulas."""

import math

import pytest
import torch

from aihf import losses


def test_rloo_advantages_hand_computed():
    rewards = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    # A_ij = R_ij - mean of the other two samples of prompt i.
    expected = torch.tensor([[1 - 4.0, 2 - 3.5, 6 - 1.5], [0 - 1.5, 0 - 1.5, 3 - 0.0]])
    adv = losses.rloo_advantages(rewards)
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(adv.sum(1), torch.zeros(2))
    # k/(k-1) times the centred rewards.
    torch.testing.assert_close(adv, 1.5 * (rewards - rewards.mean(1, keepdim=True)))


def test_rloo_advantages_rejects_bad_shapes():
    with pytest.raises(ValueError, match="k >= 2"):
        losses.rloo_advantages(torch.ones(3, 1))
    with pytest.raises(ValueError, match="shape"):
        losses.rloo_advantages(torch.ones(4))


def test_kl_penalty_and_regularized_rewards_hand_computed():
    logps = torch.tensor([-3.0, -5.0, -1.0])
    ref = torch.tensor([-4.0, -5.5, -0.5])
    torch.testing.assert_close(losses.kl_penalty(logps, ref), torch.tensor([1.0, 0.5, -0.5]))
    scores = torch.tensor([2.0, 0.0, -1.0])
    torch.testing.assert_close(
        losses.kl_regularized_rewards(scores, logps, ref, beta=0.2), torch.tensor([1.8, -0.1, -0.9])
    )
    torch.testing.assert_close(losses.kl_regularized_rewards(scores, logps, ref, beta=0.0), scores)
    with pytest.raises(ValueError, match="beta"):
        losses.kl_regularized_rewards(scores, logps, ref, beta=-1.0)


def test_whiten():
    v = torch.tensor([1.0, 2.0, 3.0, 6.0])
    w = losses.whiten(v)
    assert abs(w.mean().item()) < 1e-6
    assert w.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    assert losses.whiten(torch.tensor([5.0])).item() == 0.0


def test_policy_gradient_loss_matches_written_formula_and_gradient():
    logps = torch.tensor([-2.0, -1.0, -4.0, -3.0], requires_grad=True)
    adv = torch.tensor([0.5, -1.0, 2.0, -1.5])
    loss = losses.policy_gradient_loss(logps, adv)
    assert loss.item() == pytest.approx(-(0.5 * -2 + -1.0 * -1 + 2.0 * -4 + -1.5 * -3) / 4)
    loss.backward()
    torch.testing.assert_close(logps.grad, -adv / 4)


def _rl_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    P, k, T = 3, 4, 5
    n = P * k
    mask = torch.ones(n, T)
    for i in range(n):
        mask[i, 1 + i % (T - 1) :] = 0  # variable lengths, at least one token
    token_logps = (-torch.rand(n, T, generator=g) * 3).requires_grad_(True)
    ref_token = -torch.rand(n, T, generator=g) * 3
    scores = torch.randn(n, generator=g)
    return P, k, mask, token_logps, ref_token, scores


def test_rloo_policy_loss_for_given_samples_equals_written_formula():
    """Loss = -1/N sum_i A_i log pi(y_i), A from the KL-penalised rewards by leave-one-out."""
    P, k, mask, tok, ref_tok, scores = _rl_batch()
    beta = 0.3
    logps = (tok * mask).sum(1)
    ref = (ref_tok * mask).sum(1)
    rewards = losses.kl_regularized_rewards(scores, logps.detach(), ref, beta)
    adv = losses.rloo_advantages(rewards.view(P, k)).view(-1)
    loss = losses.clipped_policy_loss(tok, tok.detach(), adv, mask, 0.2).loss
    loss.backward()
    ours = tok.grad.clone()

    # Written out with plain loops.
    n = P * k
    r = [scores[i].item() - beta * (logps[i].item() - ref[i].item()) for i in range(n)]
    a = []
    for i in range(n):
        p = i // k
        others = [r[p * k + j] for j in range(k) if p * k + j != i]
        a.append(r[i] - sum(others) / (k - 1))
    tok2 = tok.detach().clone().requires_grad_(True)
    formula = -sum(a[i] * (tok2[i] * mask[i]).sum() for i in range(n)) / n
    formula.backward()
    torch.testing.assert_close(ours, tok2.grad, rtol=1e-5, atol=1e-7)
    # And the same gradient as plain REINFORCE on sequence log-probs.
    tok3 = tok.detach().clone().requires_grad_(True)
    losses.policy_gradient_loss((tok3 * mask).sum(1), adv).backward()
    torch.testing.assert_close(ours, tok3.grad, rtol=1e-5, atol=1e-7)
    assert all(math.isfinite(x) for x in a)


def test_clipped_policy_loss_clips_hand_computed():
    # One sequence, two tokens; ratio e^{0.5} = 1.65 > 1.2 on token 0, e^{-0.5} = 0.61 < 0.8 on token 1.
    old = torch.tensor([[-1.0, -1.0]])
    new = torch.tensor([[-0.5, -1.5]], requires_grad=True)
    mask = torch.ones(1, 2)
    pos = losses.clipped_policy_loss(new, old, torch.tensor([2.0]), mask, clip_range=0.2)
    # A > 0: min(rho A, clip(rho) A) -> 1.2*2 on token 0 (clipped), e^-0.5*2 on token 1 (not clipped).
    assert pos.loss.item() == pytest.approx(-(1.2 * 2 + math.exp(-0.5) * 2), rel=1e-6)
    assert pos.clip_fraction.item() == pytest.approx(0.5)
    pos.loss.backward()
    assert new.grad[0, 0].item() == 0.0  # clipped tokens pass no gradient
    assert new.grad[0, 1].item() == pytest.approx(-2 * math.exp(-0.5), rel=1e-6)
    neg = losses.clipped_policy_loss(new.detach(), old, torch.tensor([-1.0]), mask, clip_range=0.2)
    # A < 0: token 0 unclipped (rho A = -1.65 < -1.2), token 1 clipped at 0.8.
    assert neg.loss.item() == pytest.approx(math.exp(0.5) + 0.8, rel=1e-6)


def test_center_rewards_loss():
    a, b = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 1.0])
    assert losses.center_rewards_loss(a, b).item() == pytest.approx((1.5**2 + 1.0**2) / 2)
