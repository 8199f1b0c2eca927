"""Metrics TRL users read (issue 21, item 6): entropy, mean_token_accuracy, num_tokens / eval_num_tokens.
The DPO reduction's values equal TRL's DPOTrainer (tests/llm/test_reductions.py METRICS); here the
values with demonstrations, computed by hand one sequence at a time."""

import pytest
import torch

from aihf.llm import AIHFTrainer
from aihf.tasks.tiny import build_model

from .helpers import config, reverse_task, task_tokenizer


@torch.no_grad()
def _token_values(model, prompt, answer):
    """Entropy (nats) and top-1 hit of each answer token's predicted distribution."""
    ids = torch.tensor([prompt + answer])
    logits = model.eval()(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    logp = logits.log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    hits = (logits.argmax(-1) == torch.tensor(answer)).float()
    return entropy.tolist(), hits.tolist()


def test_entropy_and_demonstration_token_accuracy_over_the_eval_set(tmp_path):
    demos, prefs = reverse_task(n_demos=8, n_prefs=8, seed=3)
    demos[1]["completion"] += " a b c d"  # unequal lengths: token means must weigh by tokens
    tok = task_tokenizer()
    t = AIHFTrainer(
        build_model(tok, "llama", hidden_size=32, seed=0),
        args=config(tmp_path, per_device_eval_batch_size=2, max_steps=2, learning_rate=1e-2),
        demonstrations=demos,
        preferences=prefs,
        eval_demonstrations=demos[:3],
        eval_preferences=prefs[:3],
        processing_class=tok,
    )
    before = t.evaluate()
    assert before["eval_num_tokens"] == 0  # TRL's: the tokens trained on so far
    t.train()
    trained = [h["num_tokens"] for h in t.state.log_history if "num_tokens" in h and "loss" in h][-1]
    metrics = t.evaluate()
    assert metrics["eval_num_tokens"] == trained > 0

    entropies, hits = [], []
    for row in t.eval_dataset.preferences:
        for answer in ("chosen_ids", "rejected_ids"):
            entropies += _token_values(t.model, row["prompt_ids"], row[answer])[0]
    for row in t.eval_dataset.demonstrations:
        e, h = _token_values(t.model, row["prompt_ids"], row["completion_ids"])
        entropies, hits = entropies + e, hits + h
    assert metrics["eval_entropy"] == pytest.approx(sum(entropies) / len(entropies), rel=1e-5)
    assert metrics["eval_mean_token_accuracy"] == pytest.approx(sum(hits) / len(hits), abs=1e-6)
    assert 0 < metrics["eval_entropy"] < torch.log(torch.tensor(float(len(tok)))).item()
    train_logs = [h for h in t.state.log_history if "loss" in h]
    assert all({"entropy", "mean_token_accuracy", "num_tokens"} <= set(h) for h in train_logs)
