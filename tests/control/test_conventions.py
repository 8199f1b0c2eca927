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
from aihf.control.reward import env_actions, reward_loss, segment_returns  # noqa: E402
from aihf.control.trainer import ControlTrainer  # noqa: E402

from .helpers import ENV, pendulum_config  # noqa: E402


NUM_PREFERENCES = 10  # the data_dir fixture's pairs (conftest.py)


def _trainer(data_dir, out, **kw) -> ControlTrainer:
    # Pendulum's actions are in [-2, 2]: SAC's [-1, 1] scale differs from the env's units by 2.
    settings = dict(reward_input="state_action", rounds=1, sac_steps_per_round=300, learning_starts=200)
    trainer = ControlTrainer(pendulum_config(data_dir, out, **{**settings, **kw}))
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


# ----------------------------------------------------------------------------- item 6: inputs refused or warned
def _segments(lengths, seg_len=4, pad=0.0, seed=0):
    """(P, L, 3) Pendulum-like observations and (P, L, 1) actions; steps past each length set to ``pad``."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(-np.pi, np.pi, (len(lengths), seg_len))
    obs = np.stack([np.cos(angle), np.sin(angle), rng.uniform(-1, 1, angle.shape)], -1)
    act = rng.uniform(-1.5, 1.5, (len(lengths), seg_len, 1))
    valid = np.arange(seg_len)[None] < np.asarray(lengths)[:, None]
    return np.where(valid[..., None], obs, pad), np.where(valid[..., None], act, pad)


def _pref_file(path, chosen_lengths, rejected_lengths, with_lengths):
    co, ca = _segments(chosen_lengths, seed=1)
    ro, ra = _segments(rejected_lengths, seed=2)
    arrays = dict(chosen_observations=co, chosen_actions=ca, rejected_observations=ro, rejected_actions=ra)
    if with_lengths:
        arrays.update(chosen_lengths=np.asarray(chosen_lengths), rejected_lengths=np.asarray(rejected_lengths))
    np.savez(path, **arrays)
    return str(path)


def _train_argv(data_dir, out, method, *extra):
    """A seconds-long `aihf control train` command, with only the budget flags ``method`` uses."""
    budget = ["--bc_steps", "5"] if method == "bc" else ["--rounds", "1", "--sac_steps_per_round", "150"]
    budget += ["--final_eval_episodes", "1"] if method == "bc" else ["--eval_episodes", "1", "--final_eval_episodes", "1"]
    return [
        "train", "--preset", "ci", "--env_id", ENV, "--method", method, "--demonstrations",
        str(data_dir / "demos.npz"), *budget, "--progress", "false", "--output_dir", str(out), *extra,
    ]  # fmt: skip


def test_zero_padded_segments_without_lengths_are_refused_naming_file_pair_and_field(data_dir, tmp_path, capsys):
    """Segments padded to a common length with zeros but no *_lengths would score the padding as real
    steps in each segment's summed reward: refused, one line, exit 2, nothing written."""
    path = _pref_file(tmp_path / "padded.npz", [4, 4, 2], [4, 3, 4], with_lengths=False)
    with pytest.raises(DataError) as e:
        load_preferences(path)
    assert str(e.value).startswith(
        f"{path}, pair 2, field 'chosen_lengths': missing, but this chosen segment ends in 2 all-zero step(s)"
    )
    out = tmp_path / "run"
    assert cli.main(_train_argv(data_dir, out, "aihf", "--preferences", path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}, pair 2, field 'chosen_lengths': missing" in err
    assert not out.exists()
    # With the lengths the same arrays are read, and the padding counts for nothing.
    path = _pref_file(tmp_path / "marked.npz", [4, 4, 2], [4, 3, 4], with_lengths=True)
    prefs = load_preferences(path)
    assert prefs.chosen_lengths.tolist() == [4, 4, 2] and prefs.rejected_lengths.tolist() == [4, 3, 4]
    rewards = torch.ones(3, 4)
    assert segment_returns(rewards, torch.as_tensor(prefs.chosen_lengths)).tolist() == [4.0, 4.0, 2.0]
    # Unpadded full-length segments need no lengths.
    assert len(load_preferences(_pref_file(tmp_path / "full.npz", [4, 4], [4, 4], with_lengths=False))) == 2


@pytest.mark.parametrize("which", ["demonstrations", "preferences"])
def test_actions_at_twice_the_bound_are_refused_naming_file_episode_step_and_field(data_dir, tmp_path, capsys, which):
    import gymnasium as gym

    space = gym.make(ENV).action_space
    if which == "demonstrations":
        demos = dict(np.load(data_dir / "demos.npz"))
        demos["actions"] = demos["actions"].copy()
        demos["actions"][205, 0] = 2 * space.high[0]  # episode 1 (of 200 steps each), step 5
        path = str(tmp_path / "demos.npz")
        np.savez(path, **demos)
        where = "episode 1, step 5 (row 205), field 'actions': 4 (dimension 0)"
        argv = _train_argv(data_dir, tmp_path / "run", "bc")
        argv[argv.index("--demonstrations") + 1] = path
        with pytest.raises(DataError, match="outside"):
            load_trajectories(path, gym.make(ENV).observation_space, space)
    else:
        path = _pref_file(tmp_path / "prefs.npz", [4, 4], [4, 2], with_lengths=True)
        arrays = dict(np.load(path))
        arrays["rejected_actions"][1, 3, 0] = 99.0  # padding: anything finite is allowed
        arrays["rejected_actions"][1, 1, 0] = 2 * space.low[0]
        np.savez(path, **arrays)
        where = "pair 1, step 1, field 'rejected_actions': -4 (dimension 0)"
        argv = _train_argv(data_dir, tmp_path / "run", "pref_rl", "--preferences", path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"aihf control train: {path}, {where} is outside the env's action bounds [-2, 2]; " + (
        'actions are in the env\'s units (docs/control.md, "Data format")\n'
    )
    assert not (tmp_path / "run").exists()
    # Float32 rounding at the bound is not an error.
    if which == "preferences":
        arrays["rejected_actions"][1, 1, 0] = np.nextafter(np.float32(-2.0), np.float32(-3.0))
        np.savez(path, **arrays)
        assert len(load_preferences(path, None, space)) == 2


@pytest.mark.parametrize("method", ["ml_irl", "bc"])
def test_options_a_method_does_not_use_draw_one_warning_each(data_dir, tmp_path, capsys, method):
    prefs = str(data_dir / "preferences.npz")
    argv = _train_argv(data_dir, tmp_path / "a", method, "--preferences", prefs, "--num_preferences", "5")
    assert cli.main(argv) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert err == [
        f"aihf control train: warning: --preferences {prefs} is not used by --method {method}",
        f"aihf control train: warning: --num_preferences 5 is not used by --method {method}",
    ]
    # `--num_preferences 0` says "no pairs" (the benchmark's ML-IRL and BC commands): no warning.
    argv = _train_argv(data_dir, tmp_path / "b", method, "--preferences", prefs, "--num_preferences", "0")
    assert cli.main(argv) == 0
    assert "warning" not in capsys.readouterr().err
    if method == "bc":  # the whole reward side is unused by behaviour cloning
        argv = _train_argv(data_dir, tmp_path / "c", "bc", "--reward_input", "state_action")
        assert cli.main(argv) == 0
        assert "warning: --reward_input state_action is not used by --method bc" in capsys.readouterr().err


def test_every_option_a_method_is_said_to_ignore_is_a_setting():
    from aihf.control.config import METHOD_IGNORES, METHODS

    names = {f.name for f in ControlConfig.__dataclass_fields__.values()}
    assert set(METHOD_IGNORES) == set(METHODS)
    for method, ignored in METHOD_IGNORES.items():
        assert set(ignored) <= names - {"method", "env_id", "output_dir", "seed"}, method
    assert "demonstrations" not in METHOD_IGNORES["pref_rl"]  # read for meta.json's reference returns


# ----------------------------------------------------------------------------- item 8: learning curves
def test_learning_curves_are_a_grid_with_shared_axes_and_one_legend(tmp_path, monkeypatch):
    """The cpu table's 7 settings: a 2 x 4 grid (not a 1 x 7 strip), every panel on the same axes, one
    legend for the figure, and a PNG about as tall as it is wide rather than a 9:1 strip."""
    import matplotlib.pyplot as plt
    from PIL import Image

    from aihf.control.bench_report import METHOD_ORDER
    from aihf.control.plots import plot_curves

    settings = ["expert1_p0", "expert1_p10", "expert1_p100", "expert4_p0", "expert4_p100", "low1_p0", "low1_p100"]
    rows = []
    for s in settings:
        methods = ["ml_irl", "bc"] if s.endswith("_p0") else ["aihf"]
        for m in methods:
            for seed in range(2):
                history = [(1000 * (i + 1), 0.1 * i + 0.05 * seed) for i in range(4)]
                rows.append({"setting": s, "method": m, "seed": seed, "history": history})
    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), close(fig)))
    path = tmp_path / "curves.png"
    plot_curves("Pendulum-v1", rows, str(path), METHOD_ORDER)
    (fig,) = figures
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 7
    assert len({round(ax.get_position().y0, 3) for ax in panels}) == 2  # two rows
    assert len({round(ax.get_position().x0, 3) for ax in panels}) == 4  # four columns
    first = panels[0]
    for ax in panels[1:]:
        assert first.get_shared_x_axes().joined(first, ax) and first.get_shared_y_axes().joined(first, ax)
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    assert len(legends) == 1
    assert [t.get_text() for t in legends[0].get_texts()][:3] == ["aihf", "ml_irl", "bc (final level: no env steps)"]
    width, height = Image.open(path).size
    assert width / height < 3
