"""RL on a given, trained reward model that stays fixed: TRL's RewardTrainer -> RLOOTrainer pipeline in
one AIHFRLTrainer (``demo_weight=0``, ``freeze_reward_model=True``, ``reward_pretrain_steps=0``)."""

import pytest
import torch

from aihf import ConfigError
from aihf.llm.rl_trainer import AIHFRLTrainer
from aihf.methods import config_for

from . import rl_task
from .rl_task import rl_args

FIXED = dict(demo_weight=0.0, freeze_reward_model=True, reward_pretrain_steps=0)


def _params(model):
    return torch.cat([p.detach().flatten().float().cpu() for p in model.parameters()])


def test_rl_runs_on_a_saved_reward_model_that_stays_fixed(tmp_path):
    tok = rl_task.tokenizer()
    _, prefs, _ = rl_task.make_data(n_demos=4, n_prefs=16, n_eval=4)
    # Stage 1 (TRL's RewardTrainer): an RLHF run that only pretrains its reward model, saved as a folder.
    first = AIHFRLTrainer(
        rl_task.model(tok),
        args=rl_args(tmp_path / "rm", num_rounds=1, demo_weight=0.0, reward_pretrain_steps=8, freeze_reward_model=True),
        preferences=prefs,
        processing_class=tok,
    )
    first.train()
    first.save_model()
    saved = str(tmp_path / "rm" / "out" / "reward_model")
    # Stage 2 (TRL's RLOOTrainer with reward_funcs=that model): prompts only, the reward model fixed.
    prompts = [{"prompt": "say : " + t} for t in rl_task.TOPICS]
    policy = rl_task.model(tok, seed=1)
    before = _params(policy)
    rl = AIHFRLTrainer(
        policy,
        args=rl_args(tmp_path / "rl", num_rounds=2, per_device_train_batch_size=2, **FIXED),
        reward_model=saved,
        train_dataset=prompts,
        processing_class=tok,
    )
    rm_before = _params(rl.reward_model)
    texts = ([p["prompt"] for p in prompts[:3]], [" g1 g2", " b1 b2", " g1 b1"])
    assert rl.score(*texts) == pytest.approx(first.score(*texts), abs=1e-5)  # the saved model, as trained
    rl.train()
    assert torch.equal(_params(rl.reward_model), rm_before)  # never updated
    assert not torch.equal(_params(rl.policy), before)  # the policy learned on it
    assert all("reward_model/loss" not in h for h in rl.state.log_history)  # no reward step ran


def test_a_frozen_reward_model_without_training_or_a_given_model_is_refused(tmp_path):
    tok = rl_task.tokenizer()
    _, prefs, _ = rl_task.make_data(n_demos=4, n_prefs=8, n_eval=4)
    # Moved from AIHFRLConfig's checks (tests/cli/test_config_errors.py): only the trainer knows whether a
    # trained reward_model= was given.
    with pytest.raises(ConfigError, match="untrained reward model: pass a trained reward_model=") as e:
        AIHFRLTrainer(rl_task.model(tok), args=rl_args(tmp_path, **FIXED), preferences=prefs, processing_class=tok)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


def test_the_rlhf_preset_skips_pretraining_only_for_a_trained_reward_model():
    with pytest.raises(ConfigError, match="or give a trained reward model"):
        config_for("rlhf", output_dir="o", reward_pretrain_steps=0)
    config = config_for("rlhf", trained_reward_model=True, output_dir="o", reward_pretrain_steps=0)
    assert config.freeze_reward_model and config.demo_weight == 0.0 and config.reward_pretrain_steps == 0
