"""Evaluation metrics are whole-set values, whatever the eval batch size (issue 19, item 1)."""

import math

import pytest
import torch

from aihf.data import pad_sequences
from aihf.llm import AIHFTrainer
from aihf.llm.logprobs import sequence_logps
from aihf.tasks.tiny import build_model

from .helpers import config, reverse_task, task_tokenizer


def _eval_trainer(tmp_path, batch_size):
    demos, prefs = reverse_task(n_demos=8, n_prefs=8, seed=3)
    demos[1]["completion"] += " a b c d"  # unequal completion lengths: token means must weigh by tokens
    tok = task_tokenizer()
    return AIHFTrainer(
        build_model(tok, "llama", hidden_size=32, seed=0),
        # A reference that differs from the policy, so that rewards, margins and accuracies are not all 0.
        ref_model=build_model(tok, "llama", hidden_size=32, seed=1),
        args=config(tmp_path, per_device_eval_batch_size=batch_size),
        demonstrations=demos,
        preferences=prefs,
        eval_demonstrations=demos[:3],
        eval_preferences=prefs[:3],
        processing_class=tok,
    )


@torch.no_grad()
def _row_logps(model, prompt, answer, pad):
    batch = pad_sequences([prompt], [answer], pad)
    logps, tokens = sequence_logps(model.eval(), **batch)
    return float(logps[0]), int(tokens[0])


def _whole_set_values(t):
    """The eval metrics computed by hand, one sequence at a time, over the 3 pairs and 3 demonstrations."""
    pad, beta = t.processing_class.pad_token_id, t.args.beta
    policy, ref = t.model, t.ref_model
    chosen_r, rejected_r, pair_losses = [], [], []
    for row in t.eval_dataset.preferences:
        p = row["prompt_ids"]
        c = beta * (_row_logps(policy, p, row["chosen_ids"], pad)[0] - _row_logps(ref, p, row["chosen_ids"], pad)[0])
        r = beta * (
            _row_logps(policy, p, row["rejected_ids"], pad)[0] - _row_logps(ref, p, row["rejected_ids"], pad)[0]
        )
        chosen_r.append(c)
        rejected_r.append(r)
        pair_losses.append(math.log1p(math.exp(-(c - r))))  # -log sigmoid(margin)
    nll, tokens = 0.0, 0
    for row in t.eval_dataset.demonstrations:
        logp, n = _row_logps(policy, row["prompt_ids"], row["completion_ids"], pad)
        nll, tokens = nll - logp, tokens + n
    n_pairs = len(chosen_r)
    margins = [c - r for c, r in zip(chosen_r, rejected_r)]
    values = {
        "eval_rewards/chosen": sum(chosen_r) / n_pairs,
        "eval_rewards/rejected": sum(rejected_r) / n_pairs,
        "eval_rewards/margins": sum(margins) / n_pairs,
        "eval_rewards/accuracies": sum(m > 0 for m in margins) / n_pairs,
        "eval_loss/pref": sum(pair_losses) / n_pairs,
        "eval_demo/nll": nll / tokens,
    }
    values["eval_loss"] = values["eval_loss/pref"] + values["eval_demo/nll"]  # both weights are 1
    return values


def test_eval_metrics_are_whole_set_values_for_any_batch_size(tmp_path):
    expected = None
    for batch_size in (1, 2, 3, 7):
        t = _eval_trainer(tmp_path / str(batch_size), batch_size)
        metrics = t.evaluate()
        if expected is None:
            expected = _whole_set_values(t)
            # the set must make the check bite: a share of pairs that no mean of batch means gives
            assert expected["eval_rewards/accuracies"] in (1 / 3, 2 / 3)
        for name, value in expected.items():
            assert metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-7), (batch_size, name)
        assert metrics["eval_loss/demo"] == metrics["eval_demo/nll"]


def test_an_eval_loss_with_fewer_terms_than_the_training_loss_is_said_once(tmp_path, caplog):
    """Issue 21, item 4: eval_loss is the objective over the eval sets given; when one source is
    missing there, one line says which term eval_loss lacks."""
    demos, prefs = reverse_task(n_demos=4, n_prefs=4, seed=3)
    tok = task_tokenizer()

    def build(**evals):
        caplog.clear()
        with caplog.at_level("INFO", logger="aihf"):
            AIHFTrainer(
                build_model(tok, "llama", hidden_size=32, seed=0),
                args=config(tmp_path / str(len(caplog.records)), overwrite_output_dir=True),
                demonstrations=demos,
                preferences=prefs,
                processing_class=tok,
                **evals,
            )
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("eval_loss")]

    said = build(eval_preferences=prefs[:2])
    assert said == [
        "eval_loss is the preference (DPO) term alone (no eval_demonstrations given), while the training loss also "
        "has the demonstration term: pass eval_demonstrations= to evaluate the same objective"
    ]
    assert build(eval_preferences=prefs[:2], eval_demonstrations=demos[:2]) == []
