"""The explicit reward model and the AIHF-RL reward step."""

import copy

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from aihf.data import pad_sequences
from aihf.llm.reward_model import (
    evaluate_reward_model,
    freeze_lower_layers,
    load_reward_model,
    reward_model_from_policy,
    reward_scores,
    save_reward_model,
)
from aihf.llm.rl_trainer import AIHFRLTrainer
from aihf.tasks.tiny import build_model
from tests.device import USE_CPU

from . import rl_task
from .helpers import reverse_task, task_tokenizer


def rl_args(tmp_path, **overrides):
    return rl_task.rl_args(tmp_path, per_device_train_batch_size=4, num_generations=2, num_rounds=2, **overrides)


def _reward_model(tok, seed=3):
    rm = reward_model_from_policy(build_model(tok, "llama", hidden_size=32, seed=seed), tok.pad_token_id)
    with torch.no_grad():
        rm.score.weight.mul_(50.0)  # rewards of order 1, so that the loss is far from log 2
    return rm


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_reward_step_with_demo_weight_zero_equals_trl_reward_trainer(tmp_path):
    trl = pytest.importorskip("trl")
    tok = task_tokenizer()
    _, prefs = reverse_task(n_prefs=8, seed=1)
    rm = _reward_model(tok)
    ours_rm, trl_rm = copy.deepcopy(rm), copy.deepcopy(rm)
    ours = AIHFRLTrainer(
        build_model(tok, "llama", hidden_size=32, seed=0),
        reward_model=ours_rm,
        args=rl_args(tmp_path, demo_weight=0.0, center_rewards_coefficient=0.01),
        preferences=prefs,
        processing_class=tok,
    )
    theirs = trl.RewardTrainer(
        model=trl_rm,
        args=trl.RewardConfig(
            output_dir=str(tmp_path / "trl"),
            per_device_train_batch_size=8,
            center_rewards_coefficient=0.01,
            max_length=None,
            bf16=False,
            report_to="none",
            use_cpu=USE_CPU,
        ),
        train_dataset=Dataset.from_list(prefs),
        processing_class=tok,
    )
    trl_batch = theirs.data_collator([theirs.train_dataset[i] for i in range(8)])
    batch = ours.preferences[:8]
    mine = pad_sequences(
        list(batch["prompt_ids"]) * 2, list(batch["chosen_ids"]) + list(batch["rejected_ids"]), tok.pad_token_id
    )
    assert torch.equal(mine["input_ids"], trl_batch["input_ids"])  # the same sequences, in the same order

    ours_rm.train(), trl_rm.train()
    our_loss, metrics = ours.reward_loss(batch, None, None)
    trl_loss = theirs.compute_loss(trl_rm, trl_batch)
    our_loss.backward(), trl_loss.backward()
    assert our_loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    assert abs(our_loss.item() - 0.6931) > 1e-2  # a non-trivial value
    assert metrics["reward_model/pref_accuracy"] == pytest.approx(theirs._metrics["train"]["accuracy"][0], abs=1e-6)
    assert metrics["reward_model/pref_margin"] == pytest.approx(theirs._metrics["train"]["margin"][0], abs=1e-5)
    g_ours, g_trl = _grads(ours_rm), _grads(trl_rm)
    assert g_ours.keys() == g_trl.keys() and g_ours
    for name in g_ours:
        torch.testing.assert_close(g_ours[name], g_trl[name], rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize("demo_loss", ["logistic", "linear"])
def test_reward_loss_with_demonstrations_equals_formula(tmp_path, demo_loss):
    tok = task_tokenizer()
    demos, prefs = reverse_task(n_demos=4, n_prefs=4, seed=2)
    rm = _reward_model(tok)
    t = AIHFRLTrainer(
        build_model(tok, "llama", hidden_size=32, seed=0),
        reward_model=rm,
        args=rl_args(
            tmp_path,
            demo_weight=0.7,
            pref_weight=0.4,
            demo_loss=demo_loss,
            reward_clamp=0.05,
            use_references_as_demonstrations=False,
        ),
        demonstrations=demos,
        preferences=prefs,
        processing_class=tok,
    )
    p, d = t.preferences[:4], t.demonstrations[:2]
    samples = [[[10, 11, 2], [12, 2]], [[13, 14, 15, 2], [11, 2]]]
    loss, metrics = t.reward_loss(p, d, samples)

    def score(prompt, answer):
        return reward_scores(rm, [prompt], [answer], tok.pad_token_id)[0]

    rows = zip(p["prompt_ids"], p["chosen_ids"], p["rejected_ids"])
    bt = torch.stack([-F.logsigmoid(score(x, c) - score(x, r)) for x, c, r in rows]).mean()
    terms = []
    for i in range(2):
        x, ye = d["prompt_ids"][i], d["completion_ids"][i]
        for y in samples[i]:
            if demo_loss == "logistic":
                terms.append(-F.logsigmoid(score(x, ye) - score(x, y)))
            else:
                terms.append(score(x, y).clamp(-0.05, 0.05) - score(x, ye).clamp(-0.05, 0.05))
    expected = 0.4 * bt + 0.7 * torch.stack(terms).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert metrics["reward_model/loss"] == pytest.approx(loss.item())
    assert {"reward_model/loss_demo", "reward_model/demo_accuracy", "reward_model/demo_margin"} <= metrics.keys()


def test_reward_model_save_load_freeze_and_evaluate(tmp_path):
    tok = task_tokenizer()
    _, prefs = reverse_task(n_prefs=6, seed=4)
    rm = _reward_model(tok)
    freeze_lower_layers(rm, 1)
    frozen = {n for n, p in rm.named_parameters() if not p.requires_grad}
    assert any("embed" in n for n in frozen) and any("layers.0." in n for n in frozen)
    assert not any("layers.1." in n for n in frozen) and "score.weight" not in frozen
    with pytest.raises(ValueError, match="layers"):
        freeze_lower_layers(rm, 3)

    save_reward_model(rm, str(tmp_path / "rm"), tok)
    loaded = load_reward_model(str(tmp_path / "rm"), tok.pad_token_id).eval()
    rm.eval()
    from aihf.data import prepare_preferences

    data = prepare_preferences(prefs, tok)
    a = evaluate_reward_model(rm, data, tok.pad_token_id, batch_size=4)
    b = evaluate_reward_model(loaded, data, tok.pad_token_id, batch_size=6)
    assert a["num_pairs"] == 6 and a == pytest.approx(b, abs=1e-5)
    # The score is read at the last non-pad token: padding does not change it.
    short = reward_scores(rm, [[5, 6]], [[7, 2]], tok.pad_token_id)
    padded = reward_scores(rm, [[5, 6], [5, 6, 7, 8, 9]], [[7, 2], [7, 8, 9, 2]], tok.pad_token_id)
    torch.testing.assert_close(short[0], padded[0], rtol=1e-5, atol=1e-6)


@pytest.mark.learning
def test_preferences_steer_the_reward_model_during_rounds(tmp_path):
    """The Bradley-Terry term reaches the reward model in AIHF-RL rounds, against the demonstration term.

    The pairs prefer the *bad* words that the demonstrations never use, so the demonstration term alone
    teaches the opposite ranking. Over seeds 0-2, the training pairs' BT loss after 6 rounds is
    0.39-0.59 with pref_weight=1 and 1.28-1.44 with pref_weight=0 (from 0.69).
    """
    tok = rl_task.tokenizer()
    demos, prefs, _ = rl_task.make_data(n_demos=8, n_prefs=16, n_eval=4)
    prefs = [dict(p, chosen=p["rejected"], rejected=p["chosen"]) for p in prefs]
    losses_after, pairs = {}, None
    for pref_weight in (1.0, 0.0):
        t = AIHFRLTrainer(
            rl_task.model(tok),
            args=rl_task.rl_args(
                tmp_path / str(pref_weight),
                num_rounds=6,
                per_device_train_batch_size=4,
                num_generations=2,
                pref_weight=pref_weight,
            ),
            demonstrations=demos,
            preferences=prefs if pref_weight else None,
            processing_class=tok,
        )
        pairs = t.preferences if pairs is None else pairs
        t.train()
        with torch.no_grad():
            chosen, rejected = (
                reward_scores(t.reward_model, list(pairs["prompt_ids"]), list(pairs[col]), tok.pad_token_id)
                for col in ("chosen_ids", "rejected_ids")
            )
        losses_after[pref_weight] = F.softplus(rejected - chosen).mean().item()
    assert losses_after[0.0] > 1.0  # the demonstrations alone rank the pairs the other way
    assert losses_after[1.0] < losses_after[0.0] - 0.5
