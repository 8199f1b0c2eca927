"""AIHFRLTrainer on transformers' training machinery: the Trainer's callback events, report_to integrations,
max_steps, gradient accumulation, TRL's metric names and dataset names (issue 21, items 1, 2 and 6)."""

import pytest
import torch
from transformers import TrainerCallback

from aihf import ConfigError
from aihf.llm.rl_trainer import AIHFRLTrainer

from . import rl_task
from .rl_task import rl_args

EVENTS = (
    "on_init_end",
    "on_train_begin",
    "on_step_begin",
    "on_optimizer_step",
    "on_step_end",
    "on_log",
    "on_evaluate",
    "on_save",
    "on_train_end",
)


class Recorder(TrainerCallback):
    def __init__(self):
        self.events = []
        for name in EVENTS:
            setattr(self, name, self._recorder(name))

    def _recorder(self, name):
        def record(args, state, control, **kw):
            self.events.append((name[3:], state.global_step, kw))

        return record


def _trainer(tmp_path, callbacks=None, **overrides):
    tok = rl_task.tokenizer()
    demos, prefs, eval_prefs = rl_task.make_data(n_demos=8, n_prefs=8, n_eval=4)
    reward_funcs = overrides.pop("reward_funcs", None)
    settings = {**dict(num_rounds=2, per_device_train_batch_size=2, reward_batch_size=4), **overrides}
    return AIHFRLTrainer(
        rl_task.model(tok),
        args=rl_args(tmp_path, **settings),
        demonstrations=demos,
        preferences=prefs,
        eval_preferences=eval_prefs,
        processing_class=tok,
        callbacks=callbacks,
        reward_funcs=reward_funcs,
    )


def test_every_trainer_event_fires_in_the_trainers_order(tmp_path):
    rec = Recorder()
    t = _trainer(tmp_path, [rec], save_strategy="steps", save_steps=1)
    t.train()
    per_round = ["step_begin", "optimizer_step", "step_end", "log", "evaluate", "save"]
    assert [e[0] for e in rec.events] == ["init_end", "train_begin", *per_round, *per_round, "train_end"]
    assert [e[1] for e in rec.events if e[0] in ("log", "save")] == [1, 1, 2, 2]
    logs = [kw["logs"] for name, _, kw in rec.events if name == "log"]
    assert logs[0]["round"] == 1 and "reward" in logs[0] and logs == [{**h} for h in logs]
    evaluated = [kw["metrics"] for name, _, kw in rec.events if name == "evaluate"]
    assert set(evaluated[0]) == {"reward/eval_accuracy", "reward/eval_margin"}
    assert all(kw["model"] is t.policy and kw["optimizer"] is t.policy_optimizer for _, _, kw in rec.events)
    assert (tmp_path / "out" / "checkpoint-2" / "trainer_state.json").is_file()


def test_logging_strategy_and_steps_count_rounds(tmp_path):
    t = _trainer(tmp_path / "a", num_rounds=3, logging_steps=2)
    t.train()
    assert [h["step"] for h in t.state.log_history] == [2, 3]  # and the last round
    t = _trainer(tmp_path / "b", logging_strategy="no")
    t.train()
    assert t.state.log_history == [] and t.round == 2


def test_max_steps_counts_rounds_and_wins_over_num_rounds(tmp_path):
    t = _trainer(tmp_path, num_rounds=10, max_steps=2)
    t.train()
    assert t.round == 2 and t.state.max_steps == 2
    assert [h["step"] for h in t.state.log_history] == [1, 2]


def test_report_to_tensorboard_writes_the_logged_metrics(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    t = _trainer(tmp_path, report_to=["tensorboard"])
    t.train()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    rewards = events.Scalars("train/reward")
    assert [e.step for e in rewards] == [1, 2]
    assert [e.value for e in rewards] == pytest.approx([h["reward"] for h in t.state.log_history], rel=1e-6)


def _weights(t):
    return torch.cat([p.detach().flatten() for p in (*t.policy.parameters(), *t.reward_model.parameters())])


@pytest.mark.parametrize("num_ppo_epochs", [1, 2])
def test_gradient_accumulation_equals_the_bigger_batch(tmp_path, num_ppo_epochs):
    kw = dict(num_ppo_epochs=num_ppo_epochs, learning_rate=1e-2)
    start = _weights(_trainer(tmp_path / "start", **kw))
    accumulated = _trainer(tmp_path / "a", per_device_train_batch_size=2, gradient_accumulation_steps=2, **kw)
    accumulated.train()
    bigger = _trainer(tmp_path / "b", per_device_train_batch_size=4, **kw)
    bigger.train()
    smaller = _trainer(tmp_path / "c", per_device_train_batch_size=2, **kw)
    smaller.train()
    moved = (_weights(bigger) - start).abs().max().item()
    assert moved > 1e-3
    assert torch.allclose(_weights(accumulated), _weights(bigger), rtol=0, atol=moved * 1e-3)
    assert (_weights(smaller) - _weights(bigger)).abs().max().item() > moved * 0.05  # the batch size matters
    assert accumulated.state.log_history[-1]["num_tokens"] == bigger.state.log_history[-1]["num_tokens"]


def length_reward(prompts, completions):
    return [float(len(c)) for c in completions]


def test_trl_metrics_are_logged(tmp_path):
    t = _trainer(tmp_path, num_ppo_epochs=2, reward_funcs=[length_reward])
    seen = []
    generate = t._generate

    def counting(prompts, seed):
        completions = generate(prompts, seed)
        seen.append(sum(len(p) + len(c) for p, c in zip(prompts, completions)))
        return completions

    t._generate = counting
    t.train()
    first, last = t.state.log_history
    assert first["num_tokens"] == seen[0] and last["num_tokens"] == seen[0] + seen[1]
    for h in (first, last):
        assert 0.0 <= h["frac_reward_zero_std"] <= 1.0
        assert h["clip_ratio/region_mean"] == pytest.approx(h["clip_ratio/low_mean"] + h["clip_ratio/high_mean"])
        assert 0.0 <= h["clip_ratio/region_mean"] <= 1.0
        assert h["rewards/length_reward/mean"] > 0 and h["rewards/length_reward/std"] >= 0
        assert "rewards/reward_model/std" in h and h["entropy"] > 0.1
    t = _trainer(tmp_path / "single", num_rounds=1)
    t.train()
    assert "clip_ratio/low_mean" not in t.state.log_history[0]  # one update per batch: no clipping


def test_frac_reward_zero_std_counts_groups_whose_samples_score_alike(tmp_path):
    t = _trainer(tmp_path, num_rounds=1, reward_funcs=[lambda p, c: [1.0] * len(c)], reward_weights=[0.0, 1.0])
    t.train()
    assert t.state.log_history[0]["frac_reward_zero_std"] == 1.0


def test_trl_dataset_names(tmp_path):
    tok = rl_task.tokenizer()
    demos, prefs, eval_prefs = rl_task.make_data(n_demos=4, n_prefs=6, n_eval=4)
    args = rl_args(tmp_path, num_rounds=1, per_device_train_batch_size=2)
    t = AIHFRLTrainer(
        rl_task.model(tok), args=args, demonstrations=demos, train_dataset=prefs, eval_dataset=eval_prefs,
        processing_class=tok,
    )
    assert len(t.preferences) == 6 and len(t.eval_preferences) == 4
    with pytest.raises(ConfigError, match="train_dataset and preferences"):
        AIHFRLTrainer(rl_task.model(tok), args=args, train_dataset=prefs, preferences=prefs, processing_class=tok)
    with pytest.raises(ConfigError, match="eval_dataset and eval_preferences"):
        AIHFRLTrainer(
            rl_task.model(tok), args=args, preferences=prefs, eval_dataset=prefs, eval_preferences=prefs,
            processing_class=tok,
        )
    with pytest.raises(ConfigError, match="train_dataset holds demonstrations.*demonstrations="):
        AIHFRLTrainer(rl_task.model(tok), args=args, train_dataset=demos, processing_class=tok)
    # TRL's prompt-only rows: more RL prompts.
    only = [{"prompt": "say : t1"}, {"prompt": "say : t2"}]
    demos = [{"prompt": "say : t3", "completion": " g1 g2"}]
    args = rl_args(tmp_path, num_rounds=1, per_device_train_batch_size=2, pref_weight=0.0)
    t = AIHFRLTrainer(rl_task.model(tok), args=args, demonstrations=demos, train_dataset=only, processing_class=tok)
    texts = sorted(tok.decode(p, skip_special_tokens=True).strip() for p, _ in t.rl_prompts)
    assert texts == ["say : t1", "say : t2", "say : t3"]
    assert [j for _, j in t.rl_prompts] == [0, -1, -1]
    t.train()


def test_resume_with_gradient_accumulation_matches_the_uninterrupted_run(tmp_path):
    kw = dict(num_rounds=3, gradient_accumulation_steps=2, num_ppo_epochs=2, save_strategy="steps", save_steps=1)
    full = _trainer(tmp_path / "full", **kw)
    full.train()
    first = _trainer(tmp_path / "split", **{**kw, "max_steps": 1})
    first.train()
    resumed = _trainer(tmp_path / "split", **kw)
    resumed.train(resume_from_checkpoint=True)
    assert [h["step"] for h in resumed.state.log_history] == [1, 2, 3]
    assert resumed.state.log_history == full.state.log_history  # num_tokens included
    assert torch.equal(_weights(resumed), _weights(full))


def test_eval_strategy_steps_evaluates_every_eval_steps_rounds_and_on_start(tmp_path):
    t = _trainer(tmp_path, num_rounds=3, eval_strategy="steps", eval_steps=2, eval_on_start=True)
    t.train()
    evaluated = [h["step"] for h in t.state.log_history if "reward/eval_accuracy" in h]
    assert evaluated == [0, 2, 3]  # at the start, every 2 rounds, and the last round
    assert [h["step"] for h in t.state.log_history] == [0, 1, 2, 3]
    t = _trainer(tmp_path / "delay", num_rounds=3, eval_strategy="steps", eval_steps=1, eval_delay=2)
    t.train()
    assert [h["step"] for h in t.state.log_history if "reward/eval_accuracy" in h] == [2, 3]


def test_an_evaluation_schedule_without_eval_pairs_is_refused(tmp_path):
    """As transformers.Trainer refuses eval_strategy without an eval_dataset (found by a new user: it ran silently)."""
    tok = rl_task.tokenizer()
    demos, prefs, _ = rl_task.make_data(n_demos=4, n_prefs=4, n_eval=2)
    for settings, shown in (({"eval_strategy": "steps", "eval_steps": 1}, "eval_strategy='steps'"),
                            ({"eval_on_start": True}, "eval_on_start=True")):
        with pytest.raises(ConfigError, match=f"{shown} but no eval_preferences") as e:
            AIHFRLTrainer(
                rl_task.model(tok), args=rl_args(tmp_path, **settings), demonstrations=demos, preferences=prefs,
                processing_class=tok,
            )
        assert "\n" not in str(e.value)
