"""AIHF-RL's defaults and read-outs: the policy step follows a perfect (programmatic) reward with the
defaults, and clearly better than with the old round settings; the reward model's "last" and "mean"
read-outs give exact values; frozen layers, saving and equal-age reward samples."""

import json
import statistics

import pytest
import torch
from torch import nn

from aihf import ConfigError
from aihf.llm.reward_model import load_reward_model, reward_model_from_policy, reward_scores, save_reward_model
from aihf.llm.rl_trainer import AIHFRLTrainer

from . import rl_task
from .rl_task import rl_args


def _gold_of_policy(trainer, seed=123):
    """Mean gold of 8 samples for each of the 6 topics from the trainer's policy (fixed sampling seed)."""
    tok = trainer.tokenizer
    prompts = [tok(f"say : {t}")["input_ids"] for t in rl_task.TOPICS for _ in range(8)]
    texts = tok.batch_decode(trainer._generate(prompts, seed=seed), skip_special_tokens=True)
    return statistics.mean(rl_task.gold(t) for t in texts)


def _oracle(tmp_path, defaults, num_rounds=6):
    tok = rl_task.tokenizer()
    demos, prefs, _ = rl_task.make_data()
    args = rl_args(tmp_path, defaults=defaults, num_rounds=num_rounds, reward_steps_per_round=0, reward_weights=[0, 1])
    return AIHFRLTrainer(
        rl_task.model(tok),
        args=args,
        demonstrations=demos,
        preferences=prefs,
        processing_class=tok,
        reward_funcs=[rl_task.gold_reward],
    )


@pytest.mark.learning
def test_oracle_policy_follows_the_gold_reward_with_the_defaults(tmp_path):
    """The gold scorer AS the reward (reward_funcs, reward model weight 0): after 6 rounds the defaults
    (4 policy steps per round) reach the maximum gold; the old settings (1 step per round) move much less.
    Measured over seeds 0-4 (benchmarks/results/rl_defaults): 2.00 every seed
    against 0.48-0.85, from about 0 before training."""
    new, old = _oracle(tmp_path / "new", defaults=True), _oracle(tmp_path / "old", defaults=False)
    before = _gold_of_policy(new)
    new.train()
    old.train()
    after_new, after_old = _gold_of_policy(new), _gold_of_policy(old)
    assert abs(before) < 0.5  # a random policy says good and bad words alike
    assert after_new > 1.6
    assert after_new > after_old + 0.6
    logged = new.log_history[-1]
    assert "rewards/gold_reward/mean" in logged and "rewards/reward_model/mean" not in logged  # weight 0: not run


def test_reward_funcs_and_weights_are_checked(tmp_path):
    tok = rl_task.tokenizer()
    demos, prefs, _ = rl_task.make_data(n_demos=4, n_prefs=4)

    def make(**kw):
        funcs = kw.pop("funcs")
        return AIHFRLTrainer(
            "/nonexistent/model/never/loaded",
            args=rl_args(tmp_path, **kw),
            demonstrations=demos,
            preferences=prefs,
            processing_class=tok,
            reward_funcs=funcs,
        )

    with pytest.raises(ConfigError, match="reward_weights has 3 values but there are 2 rewards"):
        make(funcs=[rl_task.gold_reward], reward_weights=[0, 1, 1])
    with pytest.raises(ConfigError, match=r"reward_funcs\[0\] is a str"):
        make(funcs=["gold"])
    with pytest.raises(ConfigError, match="reward_weights must be finite"):
        rl_args(tmp_path, reward_weights=[float("nan")])


class _Config:
    num_labels, pad_token_id, use_return_dict = 1, 0, True


class HandBuiltClassifier(nn.Module):
    """A sequence classifier whose score at each position is a fixed number per token (the token's
    "embedding" read by a 1 -> 1 score head of weight 1), pooled at the last non-pad token as
    transformers' *ForSequenceClassification models pool."""

    def __init__(self, token_scores):
        super().__init__()
        self.config = _Config()
        self.embed = nn.Embedding(len(token_scores), 1)
        self.score = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.embed.weight.copy_(torch.tensor(token_scores).unsqueeze(1))
            self.score.weight.fill_(1.0)

    def forward(self, input_ids, attention_mask, use_cache=None):
        per_token = self.score(self.embed(input_ids))  # (B, T, 1)
        last = attention_mask.sum(1) - 1
        return type("Out", (), {"logits": per_token[torch.arange(len(input_ids)), last]})()


def test_last_and_mean_readouts_give_exact_values_on_a_hand_built_model():
    # Token t scores token_scores[t]; 0 is the pad token.
    model = HandBuiltClassifier([0.0, 1.0, 2.0, 3.0, 10.0, -4.0, 0.5])
    prompts, completions = [[1, 2], [3], [1]], [[4, 5, 6], [6], [5, 4]]
    last = reward_scores(model, prompts, completions, 0, readout="last")
    mean = reward_scores(model, prompts, completions, 0, readout="mean")
    assert last.tolist() == [0.5, 0.5, 10.0]
    # The completion's tokens only, not the prompt's nor the padding's: (10 - 4 + 0.5) / 3, 0.5 / 1, (-4 + 10) / 2.
    torch.testing.assert_close(mean, torch.tensor([6.5 / 3, 0.5, 3.0]))
    assert torch.equal(reward_scores(model, prompts, completions, 0), last)  # no recorded read-out: last
    with pytest.raises(ValueError, match="readout must be one of"):
        reward_scores(model, prompts, completions, 0, readout="max")
    model.score = None
    with pytest.raises(ValueError, match="'mean' needs per-token scores, but HandBuiltClassifier has no `score` head"):
        reward_scores(model, prompts, completions, 0, readout="mean")


def test_mean_readout_of_a_transformers_classifier_and_through_lora():
    from peft import LoraConfig, get_peft_model

    tok = rl_task.tokenizer()
    rm = reward_model_from_policy(rl_task.model(tok, seed=2), tok.pad_token_id).eval()
    with torch.no_grad():
        rm.score.weight.normal_()
    prompts = [tok("say : t1")["input_ids"], tok("say : t2")["input_ids"]]
    completions = [tok(" g1 b2")["input_ids"], tok(" g3")["input_ids"]]
    got = reward_scores(rm, prompts, completions, tok.pad_token_id, readout="mean")
    for i, (p, c) in enumerate(zip(prompts, completions)):
        with torch.no_grad():  # each row alone, no padding: the head on the completion's hidden states
            hidden = rm.model(input_ids=torch.tensor([p + c])).last_hidden_state[0, len(p) :]
        torch.testing.assert_close(got[i], (hidden @ rm.score.weight[0]).mean(), rtol=1e-5, atol=1e-6)
    lora = get_peft_model(rm, LoraConfig(r=2, target_modules="all-linear", task_type="SEQ_CLS"))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    through = reward_scores(lora, prompts, completions, tok.pad_token_id, readout="mean")
    merged = reward_scores(lora.merge_and_unload(), prompts, completions, tok.pad_token_id, readout="mean")
    torch.testing.assert_close(through, merged, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(through, got)  # the adapters did change the scores


def _trainer(tmp_path, **kw):
    tok = rl_task.tokenizer()
    demos, prefs, eval_prefs = rl_task.make_data(n_demos=8, n_prefs=8, n_eval=4)
    return AIHFRLTrainer(
        rl_task.model(tok),
        args=rl_args(tmp_path, defaults=True, num_rounds=1, per_device_train_batch_size=4, **kw),
        demonstrations=demos,
        preferences=prefs,
        eval_preferences=eval_prefs,
        processing_class=tok,
    )


@pytest.mark.parametrize("readout", ["last", "mean"])
def test_frozen_reward_layers_stay_fixed_with_either_readout(tmp_path, readout):
    t = _trainer(tmp_path, reward_freeze_layers=1, reward_readout=readout)
    before = {n: p.detach().clone() for n, p in t.reward_model.named_parameters()}
    t.train()
    for name, p in t.reward_model.named_parameters():
        moved = not torch.equal(p, before[name])
        if "embed" in name or "layers.0." in name:
            assert not p.requires_grad and not moved, name
        elif name == "score.weight" or "layers.1." in name:
            assert moved, name


def test_saved_mean_readout_reward_model_says_how_to_score(tmp_path):
    t = _trainer(tmp_path)
    assert t.readout == "mean"  # a new reward model (from the policy) defaults to the mean read-out
    t.train()
    t.save_model()
    folder = tmp_path / "out" / "reward_model"
    assert json.loads((folder / "config.json").read_text())["aihf_reward_readout"] == "mean"
    card = (folder / "README.md").read_text()
    assert "mean of the score head's per-token outputs over the completion's tokens" in card
    loaded = load_reward_model(str(folder), t.pad).eval()
    prompts, completions = [[5, 6], [5]], [[7, 8, 2], [9, 2]]
    t.reward_model.eval()
    expected = reward_scores(t.reward_model, prompts, completions, t.pad, readout="mean")
    torch.testing.assert_close(reward_scores(loaded, prompts, completions, t.pad), expected)  # its recorded read-out
    assert not torch.allclose(reward_scores(loaded, prompts, completions, t.pad, readout="last"), expected)
    # Given back as a reward model, it is read as it was trained.
    again = AIHFRLTrainer(
        rl_task.model(t.tokenizer),
        reward_model=str(folder),
        args=rl_args(tmp_path / "again", defaults=True, num_rounds=1),
        demonstrations=rl_task.make_data(n_demos=4)[0],
        preferences=rl_task.make_data(n_prefs=4)[1],
        processing_class=t.tokenizer,
    )
    assert again.readout == "mean"
    with pytest.raises(ConfigError, match="'mean' needs per-token scores"):
        from .test_rl_trainer import FirstWordReward

        _ = AIHFRLTrainer(
            rl_task.model(t.tokenizer),
            reward_model=FirstWordReward(3, 0),
            args=rl_args(tmp_path / "refused", reward_readout="mean"),
            demonstrations=rl_task.make_data(n_demos=4)[0],
            preferences=rl_task.make_data(n_prefs=4)[1],
            processing_class=t.tokenizer,
        )


def test_reward_steps_get_samples_of_one_age(tmp_path):
    """fresh_reward_samples: each reward step has its own reward_demo_batch_size demonstrations, sampled in
    one generation after the policy steps; otherwise every step reuses the last policy step's samples."""
    t = _trainer(tmp_path, reward_steps_per_round=3, reward_demo_batch_size=2, fresh_reward_samples=True)
    calls = []
    generate = t._generate
    t._generate = lambda prompts, seed: calls.append(len(prompts)) or generate(prompts, seed)
    last = [(5, [[9, 2]] * 4), (1, [[8, 2]] * 4)]
    batches = t._reward_step_demos(last)
    assert calls == [3 * 2 * 4]  # 3 steps x 2 demonstrations x 4 samples, one generation
    assert [len(i) for i, _ in batches] == [2, 2, 2] and len({j for i, _ in batches for j in i}) == 6
    assert all(len(group) == 4 for _, groups in batches for group in groups)
    reused = _trainer(tmp_path / "reused", reward_steps_per_round=3)  # the default
    assert reused._reward_step_demos(last) == [([5, 1], [[[9, 2]] * 4, [[8, 2]] * 4])] * 3
