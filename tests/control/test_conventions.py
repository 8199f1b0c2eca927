"""Conventions that would silently change what a control run learns: the units actions have where
they meet the reward net, padded preference segments, actions outside the env's bounds, options a
method does not use, and the learning-curve figure (issue 19, items 3, 6 and 8)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

from aihf import DataError  # noqa: E402
from aihf.control import cli  # noqa: E402
from aihf.control.config import ControlConfig  # noqa: E402
from aihf.control.data import load_preferences, load_trajectories  # noqa: E402
from aihf.control.reward import env_actions, segment_returns  # noqa: E402
from aihf.control.trainer import ControlTrainer, reward_loss  # noqa: E402

from .helpers import ENV, pendulum_dataset  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pendulum")
    pendulum_dataset(out, num_preferences=10)
    return out


def _trainer(data_dir, out, **kw) -> ControlTrainer:
    base = dict(
        env_id=ENV,  # actions in [-2, 2]: SAC's [-1, 1] scale differs from the env's units by 2
        demonstrations=str(data_dir / "demos.npz"),
        preferences=str(data_dir / "preferences.npz"),
        output_dir=str(out),
        reward_input="state_action",
        rounds=1,
        sac_steps_per_round=300,
        learning_starts=200,
        net_arch="16,16",
        batch_size=32,
        reward_net_arch="16,16",
        eval_episodes=1,
        progress=False,
    )
    trainer = ControlTrainer(ControlConfig(**{**base, **kw}))
    trainer._build()
    return trainer


def _fill_buffer_with(trainer: ControlTrainer, obs: np.ndarray, act_env: np.ndarray, n: int = 64) -> None:
    """Store ``n`` copies of the transition (obs, act_env) the way SAC does: the action in SB3's [-1, 1]
    scale (its own ``scale_action``)."""
    buf = trainer.model.replay_buffer
    scaled = trainer.model.policy.scale_action(act_env)
    assert not np.allclose(scaled, act_env)  # the two scales really differ on this env
    buf.observations[:n, 0] = obs
    buf.next_observations[:n, 0] = obs
    buf.actions[:n, 0] = scaled
    buf.pos = n


# ----------------------------------------------------------------------------- item 3: action units
@pytest.mark.parametrize("normalization", ["none", "buffer"])
def test_the_reward_net_sees_demo_sample_and_relabelled_actions_in_env_units(data_dir, tmp_path, normalization):
    """The same (s, a), a in env units, gets the same reward whichever way it reaches the reward net:
    as a demonstration (fit), as a policy sample drawn from the replay buffer (fit), as a replay
    minibatch SAC trains on (relabel), in the buffer statistics SAC's reward is standardised with, and
    as a one-step preference segment. Before the fix the buffer's [-1, 1] actions went in unscaled,
    so a sample was scored as r(s, a / 2) on Pendulum."""
    trainer = _trainer(data_dir, tmp_path / normalization, sac_reward_normalization=normalization)
    demos = trainer.demos
    row = int(np.argmax(np.abs(demos.actions[:, 0])))  # a large torque: |a| near 2
    obs, act = demos.observations[row], demos.actions[row]
    assert abs(act[0]) > 1.5
    _fill_buffer_with(trainer, obs, act)
    net = trainer.reward_net
    with torch.no_grad():
        expected = net(torch.as_tensor(obs[None]), torch.as_tensor(act[None])).item()
        halved = net(torch.as_tensor(obs[None]), torch.as_tensor(act[None] / 2)).item()
    assert abs(expected - halved) > 1e-3  # the net does depend on the action's scale

    # Fit: the demonstration side and the policy-sample side of the ML-IRL term.
    batch = trainer._reward_batch(1.0, 0.0)
    torch.testing.assert_close(batch.sample_act, torch.as_tensor(act).expand_as(batch.sample_act))
    batch.demo_obs, batch.demo_act = batch.sample_obs, torch.as_tensor(act).expand_as(batch.sample_act)
    with torch.no_grad():
        _, logs = reward_loss(net, batch, 1.0, 0.0)
    assert logs["demo/reward_policy"] == pytest.approx(expected, abs=1e-5)
    assert logs["demo/reward_expert"] == pytest.approx(expected, abs=1e-5)
    assert logs["loss/demo"] == pytest.approx(0.0, abs=1e-5)

    # Relabel: what SAC is trained on.
    stats = trainer._fit_sac_reward_normalization()
    if normalization == "buffer":  # every stored transition is (obs, act): the mean is its reward
        assert stats["sac_reward/mean"] == pytest.approx(expected, abs=1e-5)
    c = trainer.config
    seen = trainer.model.replay_buffer.sample(16).rewards
    want = c.sac_reward_scale * (expected + trainer.sac_reward_offset) / trainer.sac_reward_divisor
    torch.testing.assert_close(seen, torch.full((16, 1), want), rtol=1e-5, atol=1e-5)

    # Preference segments: already in env units, scored by the same net.
    with torch.no_grad():
        seg = segment_returns(net(torch.as_tensor(obs[None, None]), torch.as_tensor(act[None, None])), torch.ones(1))
    assert seg.item() == pytest.approx(expected, abs=1e-5)


def test_env_actions_inverts_sb3_scale_action_on_asymmetric_bounds():
    import gymnasium as gym
    from stable_baselines3.common.policies import BasePolicy

    space = gym.spaces.Box(np.array([-3.0, 0.0], np.float32), np.array([1.0, 0.4], np.float32))
    a = np.array([[-3.0, 0.4], [0.5, 0.1], [1.0, 0.0]], np.float32)
    scaled = torch.as_tensor(BasePolicy.scale_action(SimpleNamespace(action_space=space), a))
    back = env_actions(scaled, torch.as_tensor(space.low), torch.as_tensor(space.high))
    torch.testing.assert_close(back, torch.as_tensor(a), rtol=0, atol=1e-6)
