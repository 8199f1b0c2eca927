"""``sac_backend="sbx"``: the AIHF loop on sbx's (JAX) SAC. sbx is an optional extra: the tests that
train need it (``pytest.importorskip``); the one-line refusal without it needs only the control extra."""

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

from aihf.control import cli  # noqa: E402
from aihf.control.trainer import ControlTrainer, load_policy  # noqa: E402

from .helpers import pendulum_config  # noqa: E402


def _config(data_dir, out, **kw):
    settings = dict(
        num_demonstrations=1,
        rounds=2,
        sac_steps_per_round=300,
        learning_starts=200,
        net_arch="32,32",
        batch_size=64,
        reward_net_arch="32,32",
        reward_steps_per_round=5,
        final_eval_episodes=1,
        sac_backend="sbx",
    )
    return pendulum_config(data_dir, out, **{**settings, **kw})


def test_sbx_backend_without_sbx_says_how_to_install(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sbx", None)  # import sbx raises ImportError, installed or not
    argv = ["train", "--env_id", "Pendulum-v1", "--demonstrations", str(data_dir / "demos.npz")]
    status = cli.main([*argv, "--sac_backend", "sbx", "--output_dir", str(tmp_path / "run"), "--progress", "false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and "sac_backend=sbx" in err[0] and 'pip install "aihf[sbx]"' in err[0], err
    assert not (tmp_path / "run").exists()


def test_sbx_backend_is_refused_by_name_when_misspelt(data_dir, tmp_path, capsys):
    argv = ["train", "--demonstrations", str(data_dir / "demos.npz"), "--sac_backend", "jax"]
    assert cli.main([*argv, "--output_dir", str(tmp_path)]) == 2
    assert "sac_backend" in capsys.readouterr().err


@pytest.mark.slow  # JAX's import and compilation: ~10 CPU-s
def test_sbx_minibatches_are_relabelled_with_the_current_reward(data_dir, tmp_path):
    pytest.importorskip("sbx")
    trainer = ControlTrainer(_config(data_dir, tmp_path, rounds=1, survival_bonus=False))
    trainer._build()
    assert type(trainer.model).__module__ == "aihf.control.sbx_backend"
    trainer.model.learn(250)
    with torch.no_grad():
        last = trainer.reward_net.mlp[-1]
        last.weight.zero_()
        last.bias.fill_(2.0)
    batch = trainer.model.replay_buffer.sample(64)
    # The bound's tanh of 2.0, exactly what SAC trains on (no survival bonus, scale 1).
    expected = trainer.reward_net.bound * np.tanh(2.0 / trainer.reward_net.bound)
    np.testing.assert_allclose(batch.rewards.numpy(), expected, rtol=1e-6)


@pytest.mark.slow
def test_sbx_run_resumes_exactly_and_its_policy_file_acts_as_the_model(data_dir, tmp_path):
    pytest.importorskip("sbx")
    from aihf.control.sbx_backend import sac_arrays

    straight = ControlTrainer(_config(data_dir, tmp_path / "straight"))
    whole = straight.train()
    ControlTrainer(_config(data_dir, tmp_path / "stopped", rounds=1)).train()
    resumed = ControlTrainer(_config(data_dir, tmp_path / "stopped"))
    again = resumed.train()
    assert [h["round"] for h in again["history"]] == [1, 2]
    assert again["final"]["env_steps"] == 600 and again["final"]["return_mean"] == whole["final"]["return_mean"]
    a, b = sac_arrays(straight.model), sac_arrays(resumed.model)
    assert a.keys() == b.keys() and len(a) > 20
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    with open(tmp_path / "stopped" / "checkpoint" / "meta.json") as f:
        assert json.load(f)["config"]["sac_backend"] == "sbx"
    # The backend is part of the run: an sb3 run may not continue it.
    with pytest.raises(Exception, match="different settings.*sac_backend"):
        ControlTrainer(_config(data_dir, tmp_path / "stopped", rounds=3, sac_backend="sb3")).train()

    act = load_policy(resumed.config, str(tmp_path / "stopped" / "policy.safetensors"))
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(act(obs), resumed.model.predict(obs, deterministic=True)[0])
