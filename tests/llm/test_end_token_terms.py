"""Demonstrations and samples on equal terms at the end token.

Demonstrations end with the end token; policy samples cut at ``max_new_tokens`` do not. The
explicit reward model must not tell them apart by that token (every answer it scores is framed
with exactly one end token), and the self-play term counts an end token's log-ratio only when
both the demonstration and the sample have one.
"""

import datasets
import pytest
import torch
import torch.nn.functional as F

from aihf.llm.reward_model import frame_for_reward, reward_scores
from aihf.llm.rl_trainer import AIHFRLTrainer
from aihf.tasks.tiny import build_model

from . import rl_task
from .helpers import task_tokenizer, trainer


# ---------------------------------------------------------------------------------- reward model
def test_frame_for_reward_strips_any_stop_token_and_appends_the_first():
    assert frame_for_reward([[5, 6, 2], [5, 6], [5, 6, 9], [5, 2, 9], [2], []], [2, 9]) == [
        [5, 6, 2],
        [5, 6, 2],
        [5, 6, 2],
        [5, 2],
        [2],
        [2],
    ]
    assert frame_for_reward([[7, 3]], 3) == [[7, 3]]
    with pytest.raises(ValueError, match="end_token_id"):
        frame_for_reward([[1]], [])


def _rl_trainer(tmp_path, demos, prefs=None, **overrides):
    tok = rl_task.tokenizer()
    args = rl_task.rl_args(tmp_path, **({"pref_weight": 0.0} if prefs is None else {}), **overrides)
    return AIHFRLTrainer(rl_task.model(tok), args=args, demonstrations=demos, preferences=prefs, processing_class=tok)


def _prompt(topic):
    return f"say : {topic}"


def _answers(words):
    return [" " + " ".join(pair) for pair in words]


@pytest.mark.learning
def test_reward_cannot_separate_demonstrations_from_samples_by_the_end_token_alone(tmp_path):
    """The samples are the demonstrations' own texts, cut before their end token (as
    ``max_new_tokens`` cuts a sample). Before the fix the reward step separated them at once
    (demo accuracy 1.0 from the first step, margin 5.3 after 30); framed, the two are one sequence."""
    demos, prefs, _ = rl_task.make_data(n_demos=16, n_prefs=32)
    t = _rl_trainer(tmp_path, demos, prefs)
    eos = t.tokenizer.eos_token_id
    idx = list(range(16))
    d = t.demonstrations[idx]
    assert all(c[-1] == eos for c in d["completion_ids"])
    cut = [c[:-1] for c in d["completion_ids"]]
    head_before = t.reward_model.score.weight.detach().clone()
    for _ in range(30):  # the preference term moves the reward model; the demo term must stay at chance
        m = t.reward_step(idx, [[c] for c in cut])
        assert abs(m["reward_model/demo_margin"]) < 1e-6
        assert m["reward_model/demo_accuracy"] <= 0.5
        assert m["reward_model/loss_demo"] == pytest.approx(0.693147, abs=1e-5)
    assert (t.reward_model.score.weight - head_before).abs().max() > 1e-3  # it did train
    with torch.no_grad():
        finished = t._scores(list(d["prompt_ids"]), list(d["completion_ids"]))
        truncated = t._scores(list(d["prompt_ids"]), cut)
    assert torch.equal(finished, truncated)  # exactly, by construction
    assert finished.std() > 1e-3  # and not because every score is the same
    # The frame is the one thing that changed: unframed, the end token separates the two.
    with torch.no_grad():
        raw = reward_scores(t.reward_model, list(d["prompt_ids"]), cut, t.pad)
    assert not torch.equal(raw, truncated)


@pytest.mark.learning
def test_reward_still_separates_demonstrations_from_samples_by_content(tmp_path):
    """Demonstrations say good words, the samples (cut, without an end token) bad ones. Held-out
    pairs on unseen prompts put the end token the wrong way round (the good answer cut, the bad
    one finished): the learned reward must rank them by content."""
    good, bad = rl_task.GOOD, rl_task.BAD
    good_answers = _answers([(a, b) for a in good for b in good if a != b])
    bad_answers = _answers([(a, b) for a in bad for b in bad if a != b])
    train_topics, heldout_topics = rl_task.TOPICS[:4], rl_task.TOPICS[4:]
    demos = [{"prompt": _prompt(topic), "completion": a} for topic in train_topics for a in good_answers]
    t = _rl_trainer(tmp_path, demos, reward_learning_rate=3e-3)
    tok, n = t.tokenizer, len(t.demonstrations)
    samples = {}
    for j, completion in enumerate(t.demonstrations["completion_ids"]):
        text = bad_answers[j % len(bad_answers)]
        samples[j] = tok(text, add_special_tokens=False)["input_ids"]
        assert samples[j][-1] != tok.eos_token_id and completion[-1] == tok.eos_token_id
    for step in range(30):
        idx = [(step * 8 + i) % n for i in range(8)]
        t.reward_step(idx, [[samples[j]] for j in idx])

    rows = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    for topic in heldout_topics:
        for g, b in zip(good_answers, bad_answers):
            rows["prompt_ids"].append(tok(_prompt(topic), add_special_tokens=False)["input_ids"])
            rows["chosen_ids"].append(tok(g, add_special_tokens=False)["input_ids"])  # cut: no end token
            rows["rejected_ids"].append(tok(b, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    out = t.evaluate_reward(datasets.Dataset.from_dict(rows))
    # Measured (seed 0): accuracy 1.0, margin 5.5; with the end token scored as given (before the
    # fix) the margin was 0.12: the reward had learned the end token as much as the content.
    assert out["reward/eval_accuracy"] >= 0.9
    assert out["reward/eval_margin"] > 1.0


# ---------------------------------------------------------------------------------- self-play
def _completion_logps(model, prompt, completion):
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    per_token = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
    return per_token[len(prompt) - 1 :]


def test_self_play_counts_the_end_token_only_when_both_sides_have_one(tmp_path):
    """Four (demonstration, sample) pairs: both finished; the sample cut; the demonstration cut
    by max_length (it fits except for its end token); both cut. The end token's log-ratio counts
    in the first pair only, for the policy and the opponent alike."""
    tok = task_tokenizer()
    demos = [
        {"prompt": "reverse : a b c =", "completion": " c b a"},
        {"prompt": "reverse : d e f =", "completion": " f e d"},
        {"prompt": "reverse : a c e =", "completion": " e c a b"},  # 6 + 4 tokens: its end token is cut
        {"prompt": "reverse : b d f =", "completion": " f d b a"},
    ]
    t = trainer(
        tmp_path,
        demos=demos,
        prefs=[],
        pref_weight=0.0,
        demo_loss="self_play",
        max_length=10,
        max_prompt_length=6,
        beta=0.5,
    )
    eos = tok.eos_token_id
    ids = {w: tok.convert_tokens_to_ids(w) for w in "abcdef"}
    samples = [[ids["a"], eos], [ids["d"], ids["e"], ids["f"]], [ids["b"], eos], [ids["f"], ids["e"]]]
    t.generator = lambda model, prompts, seed: [list(s) for s in samples]
    # An opponent unlike the policy, so that every log-ratio (the end token's included) is far from 0.
    opponent = build_model(tok, "llama", hidden_size=32, seed=7)
    with torch.no_grad():
        opponent.lm_head.weight.mul_(8.0)
    t.self_play_state.opponent.load_state_dict(opponent.state_dict())
    t.self_play_state.round = 0
    batch = t.data_collator([t.train_dataset[i] for i in range(4)])
    prompts, completions = batch["demo_prompt_ids"], [list(c) for c in t.train_dataset.demonstrations["completion_ids"]]
    assert [c[-1] == eos for c in completions] == [True, True, False, False]

    t.model.train()
    loss = t.compute_loss(t.model, batch)

    keep = {  # (demonstration keeps its end token, sample keeps its end token)
        0: (True, True),
        1: (False, None),
        2: (None, False),
        3: (None, None),
    }
    terms = []
    for i in range(4):
        counted = []
        for answer, keep_end in ((completions[i], keep[i][0]), (samples[i], keep[i][1])):
            n = len(answer) - (1 if keep_end is False else 0)
            lp = _completion_logps(t.model, prompts[i], answer)[:n].sum()
            lp_t = _completion_logps(t.self_play_state.opponent, prompts[i], answer)[:n].sum()
            counted.append(lp - lp_t)
        terms.append(-F.logsigmoid(t.args.beta * (counted[0] - counted[1])))
    expected = torch.stack(terms).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    # Counting every end token (the rule before) gives a clearly different value.
    unmasked = []
    frozen_opponent = t.self_play_state.opponent
    for i in range(4):
        r = [
            (_completion_logps(t.model, prompts[i], a) - _completion_logps(frozen_opponent, prompts[i], a)).sum()
            for a in (completions[i], samples[i])
        ]
        unmasked.append(-F.logsigmoid(t.args.beta * (r[0] - r[1])))
    assert abs(torch.stack(unmasked).mean().item() - expected.item()) > 0.03  # measured: 0.066
