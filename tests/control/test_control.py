"""aihf.control: data format and validation, the labeller, the reward step, the loop, resume, CLI."""

import json
import math
import os

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

from aihf import ConfigError, DataError, losses  # noqa: E402
from aihf.control import cli  # noqa: E402
from aihf.control.config import CollectConfig  # noqa: E402
from aihf.control.data import (  # noqa: E402
    Trajectories,
    label_preferences,
    load_preferences,
    load_trajectories,
    save_trajectories,
)
from aihf.control.flags import parse_config  # noqa: E402
from aihf.control.reward import RewardBatch, RewardNet, reward_loss, segment_returns  # noqa: E402
from aihf.control.trainer import ControlTrainer  # noqa: E402

from .helpers import ENV, pendulum_config  # noqa: E402


# ----------------------------------------------------------------------------- labeller
def test_preference_probability_matches_hand_computed_values():
    p = losses.bradley_terry_preference_probability(
        torch.tensor([10.0, 0.0, 5.0]), torch.tensor([0.0, 10.0, 5.0]), temperature=10.0
    )
    # sigmoid(1), sigmoid(-1), sigmoid(0)
    torch.testing.assert_close(p, torch.tensor([0.7310585786, 0.2689414214, 0.5]))
    noisy = losses.bradley_terry_preference_probability(torch.tensor([10.0]), torch.tensor([0.0]), 10.0, 0.2)
    torch.testing.assert_close(noisy, torch.tensor([0.8 * 0.7310585786 + 0.1]))
    with pytest.raises(ValueError, match="temperature"):
        losses.bradley_terry_preference_probability(torch.zeros(1), torch.zeros(1), 0.0)


def test_labeller_temperature_is_relative_to_the_spread_of_returns():
    # Two 2-step episodes with returns 3 and 1: every pair compares them, the segment returns are
    # {3, 1} half the time each, so their std is 1 and T = 0.5 * 1; P(first wins) = sigmoid(2 / 0.5).
    pool = Trajectories(
        observations=np.array([[0.0], [0.0], [1.0], [1.0]], np.float32),
        actions=np.zeros((4, 1), np.float32),
        episode_lengths=np.array([2, 2]),
        rewards=np.array([1.0, 2.0, 0.5, 0.5], np.float32),
    )
    prefs, extras = label_preferences(pool, 4000, 2, np.random.default_rng(0), temperature_scale=0.5)
    assert float(extras["temperature"]) == pytest.approx(0.5)
    expected = 1 / (1 + math.exp(-4.0))  # 0.98201
    good_chosen = prefs.chosen_observations[:, 0, 0] == 0.0
    np.testing.assert_allclose(extras["probabilities"][good_chosen], expected, rtol=1e-6)
    np.testing.assert_allclose(extras["probabilities"][~good_chosen], 1 - expected, rtol=1e-6)
    assert abs(good_chosen.mean() - expected) < 0.015  # binomial std is 0.002
    # A 10x larger reward scale gives the same labels' probabilities: the temperature follows the spread.
    pool.rewards = pool.rewards * 10
    _, scaled = label_preferences(pool, 50, 2, np.random.default_rng(1), temperature_scale=0.5)
    np.testing.assert_allclose(
        np.sort(np.unique(scaled["probabilities"].round(6))), [1 - expected, expected], atol=1e-6
    )


def _time_indexed_pool(lengths):
    """Episodes whose observation is (time step, episode index), so a segment shows where it starts."""
    obs = np.array([[t, e] for e, n in enumerate(lengths) for t in range(n)], np.float32)
    return Trajectories(obs, np.zeros((len(obs), 1), np.float32), np.array(lengths), np.ones(len(obs), np.float32))


@pytest.mark.parametrize("length", [1, 4, 30])
def test_aligned_segments_cover_the_same_time_steps(length):
    pool = _time_indexed_pool([7, 12, 20, 5])
    prefs, _ = label_preferences(pool, 300, length, np.random.default_rng(0), aligned=True)
    for p in range(300):
        n_c, n_r = int(prefs.chosen_lengths[p]), int(prefs.rejected_lengths[p])
        t_c, t_r = prefs.chosen_observations[p, : n_c, 0], prefs.rejected_observations[p, : n_r, 0]
        assert t_c[0] == t_r[0]  # one start step for both sides
        np.testing.assert_array_equal(t_c, t_c[0] + np.arange(n_c))  # consecutive steps of one episode
        assert prefs.chosen_observations[p, 0, 1] != prefs.rejected_observations[p, 0, 1]  # two episodes
        # The shorter side has min(length, its episode length) steps; neither side runs past its episode.
        episode_lengths = [pool.episode_lengths[int(prefs.chosen_observations[p, 0, 1])],
                           pool.episode_lengths[int(prefs.rejected_observations[p, 0, 1])]]
        assert min(n_c, n_r) == min(length, min(episode_lengths)) and max(n_c, n_r) <= length
        assert t_c[-1] < episode_lengths[0] and t_r[-1] < episode_lengths[1]
    # Independent windows start at different steps in most pairs; 30 >= every length: whole episodes.
    free, _ = label_preferences(pool, 300, length, np.random.default_rng(0))
    starts_differ = (free.chosen_observations[:, 0, 0] != free.rejected_observations[:, 0, 0]).mean()
    assert starts_differ == 0 if length == 30 else starts_differ > 0.5
    if length == 30:
        whole = np.sort(np.concatenate([free.chosen_lengths, free.rejected_lengths]))
        np.testing.assert_array_equal(np.unique(whole), [5, 7, 12, 20])


# ----------------------------------------------------------------------------- reward step
def _toy_batch(rng, n=64, length=5):
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32))
    around = lambda x, y, shape: t(rng.normal([x, y], 0.1, size=(*shape, 2)))
    return RewardBatch(
        demo_obs=around(1, 0, (n,)),
        demo_act=t(np.zeros((n, 1))),
        sample_obs=around(-1, 0, (n,)),
        sample_act=t(np.zeros((n, 1))),
        chosen_obs=around(0, 1, (n, length)),
        chosen_act=t(np.zeros((n, length, 1))),
        chosen_len=torch.full((n,), length),
        rejected_obs=around(0, -1, (n, length)),
        rejected_act=t(np.zeros((n, length, 1))),
        rejected_len=torch.full((n,), length),
    )


def _gaps(net, batch):
    with torch.no_grad():
        demo_gap = (net(batch.demo_obs).mean() - net(batch.sample_obs).mean()).item()
        pref_gap = (
            (
                segment_returns(net(batch.chosen_obs), batch.chosen_len)
                - segment_returns(net(batch.rejected_obs), batch.rejected_len)
            )
            .mean()
            .item()
        )
    return demo_gap, pref_gap


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.0, 0.0), (0.0, 1.0)])
def test_reward_steps_move_reward_toward_expert_and_preferred(weights):
    """Expert states sit at (1, 0), policy states at (-1, 0); preferred segments at (0, 1),
    dispreferred at (0, -1). Each weighted term must open its own gap and only its own."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = RewardNet(2, 1, hidden=(32, 32), bound=5.0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    before = _gaps(net, _toy_batch(np.random.default_rng(99)))
    for _ in range(150):
        loss, logs = reward_loss(net, _toy_batch(rng), *weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
    demo_gap, pref_gap = _gaps(net, _toy_batch(np.random.default_rng(99)))
    if weights[0] > 0:
        assert demo_gap > before[0] + 2.0  # the reward can reach +/-5: the gap grows by several units
    if weights[1] > 0:
        assert pref_gap > before[1] + 5.0 and logs["rewards/accuracies"] == 1.0
    if weights == (0.0, 1.0):
        assert abs(demo_gap) < 1.0  # preferences say nothing about the x axis


def test_reward_loss_reduces_to_the_single_terms_exactly():
    torch.manual_seed(0)
    net, batch = RewardNet(2, 1), _toy_batch(np.random.default_rng(0))
    irl = losses.ml_irl_linear_loss(net(batch.demo_obs), net(batch.sample_obs)).loss
    bt = losses.bradley_terry_loss(
        segment_returns(net(batch.chosen_obs), batch.chosen_len),
        segment_returns(net(batch.rejected_obs), batch.rejected_len),
    ).loss
    torch.testing.assert_close(reward_loss(net, batch, 1.0, 0.0)[0], irl)
    torch.testing.assert_close(reward_loss(net, batch, 0.0, 1.0)[0], bt)
    torch.testing.assert_close(reward_loss(net, batch, 0.5, 2.0)[0], 0.5 * irl + 2.0 * bt)


def test_the_logistic_demo_term_is_the_mean_of_minus_log_sigmoid_of_the_state_gaps():
    torch.manual_seed(0)
    net, batch = RewardNet(2, 1), _toy_batch(np.random.default_rng(0))
    r_demo, r_policy = net(batch.demo_obs), net(batch.sample_obs)
    by_hand = -torch.nn.functional.logsigmoid(r_demo - r_policy).mean()
    torch.testing.assert_close(reward_loss(net, batch, 1.0, 0.0, demo_loss="logistic")[0], by_hand)


@pytest.mark.learning
def test_the_logistic_demo_term_stops_pushing_a_separated_reward_to_the_bound():
    """The linear term's gradient never vanishes, so it drives expert and policy states to +/- bound;
    the logistic one stops once the pairs are separated by a few units."""
    gaps = {}
    for form in ("linear", "logistic"):
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        net = RewardNet(2, 1, hidden=(32, 32), bound=10.0)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(400):
            loss, _ = reward_loss(net, _toy_batch(rng), 1.0, 0.0, demo_loss=form)
            opt.zero_grad()
            loss.backward()
            opt.step()
        gaps[form] = _gaps(net, _toy_batch(np.random.default_rng(99)))[0]
    assert gaps["linear"] > 15.0  # near the 20-unit ceiling of a +/-10 reward
    assert 2.0 < gaps["logistic"] < 0.75 * gaps["linear"]  # measured: ~10 against ~20


def test_reward_net_is_bounded_and_state_action_uses_actions():
    net = RewardNet(3, 2, hidden=(8,), use_actions=True, bound=2.0)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(50.0)
    r = net(torch.ones(4, 3), torch.ones(4, 2))
    assert r.shape == (4,) and (r.abs() < 2.0 + 1e-6).all()
    net2 = RewardNet(3, 2, hidden=(8,), use_actions=True)
    assert not torch.equal(net2(torch.zeros(1, 3), torch.zeros(1, 2)), net2(torch.zeros(1, 3), torch.ones(1, 2)))


# ----------------------------------------------------------------------------- data format
def _write(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_trajectory_files_round_trip_and_bad_files_name_file_row_and_key(tmp_path, data_dir):
    import gymnasium as gym

    env = gym.make(ENV)
    demos = load_trajectories(data_dir / "demos.npz", env.observation_space, env.action_space)
    assert demos.num_episodes == 2 and demos.observations.shape == (400, 3) and demos.returns().shape == (2,)
    save_trajectories(tmp_path / "copy.npz", demos.episodes([1]))
    again = load_trajectories(tmp_path / "copy.npz")
    np.testing.assert_array_equal(again.observations, demos.observations[200:])

    good = dict(observations=np.zeros((3, 3)), actions=np.zeros((3, 1)), episode_lengths=np.array([2, 1]))
    cases = [
        ({"actions": None}, "field 'actions': missing"),
        ({"episode_lengths": np.array([2, 2])}, "field 'observations': has 3 rows but episode_lengths sum to 4"),
        (
            {"observations": np.array([[0, 0, 0], [0, np.nan, 0], [0, 0, 0]])},
            "row 1, field 'observations': contains NaN",
        ),
        (
            {"actions": np.array([[0.0], [0.0], [5.0]])},
            "episode 1, step 0 (row 2), field 'actions': 5 (dimension 0) is outside the env's action bounds [-2, 2]",
        ),
        ({"observations": np.zeros((3, 4))}, "field 'observations': last dimension is 4 but the env's space has 3"),
        ({"episode_lengths": np.array([3, 0])}, "episode 1, field 'episode_lengths': must be >= 1"),
    ]
    for change, message in cases:
        arrays = {k: v for k, v in {**good, **change}.items() if v is not None}
        path = _write(tmp_path / "bad.npz", **arrays)
        with pytest.raises(DataError) as e:
            load_trajectories(path, env.observation_space, env.action_space)
        assert str(e.value) == f"{path}, {message}" or str(e.value).startswith(f"{path}, {message}")
        assert "\n" not in str(e.value)
    # Object arrays would need unpickling: refused.
    path = _write(
        tmp_path / "pickled.npz",
        observations=np.array([{"a": 1}], dtype=object),
        actions=np.zeros((1, 1)),
        episode_lengths=np.array([1]),
    )
    with pytest.raises(DataError, match="not a readable .npz"):
        load_trajectories(path)


def test_preference_files_validate_lengths_and_padding(tmp_path, data_dir):
    prefs = load_preferences(data_dir / "preferences.npz")
    assert len(prefs) == 60 and prefs.chosen_observations.shape == (60, 50, 3)
    base = dict(  # not zeros: all-zero last steps without *_lengths are refused as padding
        chosen_observations=np.ones((2, 3, 3)),
        chosen_actions=np.ones((2, 3, 1)),
        rejected_observations=np.ones((2, 3, 3)),
        rejected_actions=np.ones((2, 3, 1)),
    )
    path = _write(tmp_path / "p.npz", **base, chosen_lengths=np.array([3, 4]))
    with pytest.raises(DataError, match=r"pair 1, field 'chosen_lengths': must be between 1 and 3"):
        load_preferences(path)
    # NaN in padding is ignored, NaN in a valid step is not.
    obs = np.ones((2, 3, 3))
    obs[1, 2] = np.nan
    path = _write(tmp_path / "p.npz", **{**base, "rejected_observations": obs}, rejected_lengths=np.array([3, 2]))
    assert load_preferences(path).rejected_observations[1, 2].sum() == 0
    path = _write(tmp_path / "p.npz", **{**base, "rejected_observations": obs})
    with pytest.raises(DataError, match=r"pair 1, field 'rejected_observations': contains NaN"):
        load_preferences(path)


# ----------------------------------------------------------------------------- the loop
def _config(data_dir, out, **kw):
    settings = dict(
        num_demonstrations=1,
        rounds=3,
        sac_steps_per_round=300,
        learning_starts=200,
        net_arch="32,32",
        batch_size=64,
        reward_net_arch="32,32",
        reward_steps_per_round=5,
        reward_pretrain_steps=10,
        bc_steps=60,
    )
    return pendulum_config(data_dir, out, **{**settings, **kw})


@pytest.mark.slow
@pytest.mark.learning
def test_aihf_learns_pendulum_from_one_demonstration_and_preferences(data_dir, tmp_path):
    """One 200-step demonstration + 60 labelled segment pairs, 7000 env steps of SAC: the policy's
    true return goes from random (~-1400, normalised 0) to at least half of the expert's
    normalised score (it reaches ~0.99 on this machine; the threshold is 0.5)."""
    config = _config(
        data_dir,
        tmp_path / "run",
        rounds=7,
        sac_steps_per_round=1000,
        learning_starts=500,
        net_arch="64,64",
        batch_size=128,
        train_freq=1,
        sac_learning_rate=1e-3,
        reward_net_arch="64,64",
        reward_steps_per_round=20,
        reward_learning_rate=1e-3,
        eval_every=7,
        eval_episodes=3,
    )
    result = ControlTrainer(config).train()
    assert result["num_demonstrations"] == 1 and result["num_preferences"] == 60
    assert result["final"]["env_steps"] == 7000
    assert result["final"]["normalized_return"] > 0.5, result["final"]


def test_resume_continues_the_same_run(data_dir, tmp_path):
    out = tmp_path / "run"
    stopped = ControlTrainer(_config(data_dir, out, rounds=2))
    stopped.train()
    saved_reward = {k: v.clone() for k, v in stopped.reward_net.state_dict().items()}
    saved_buffer = stopped.model.replay_buffer.observations[:600].copy()
    saved_updates = stopped.model._n_updates

    resumed = ControlTrainer(_config(data_dir, out, rounds=3))
    resumed._build()
    resumed._load_checkpoint(str(out / "checkpoint"))
    for k, v in resumed.reward_net.state_dict().items():
        torch.testing.assert_close(v, saved_reward[k])
    np.testing.assert_array_equal(resumed.model.replay_buffer.observations[:600], saved_buffer)
    assert resumed.model.num_timesteps == 600 and resumed.model._n_updates == saved_updates
    assert resumed.reward_optimizer.state_dict()["state"][0]["step"].item() == 2 * 5

    result = ControlTrainer(_config(data_dir, out, rounds=3)).train()
    assert [h["round"] for h in result["history"]] == [1, 2, 3]
    assert result["final"]["env_steps"] == 900
    with open(out / "checkpoint" / "meta.json") as f:
        assert json.load(f)["round"] == 3
    # A different run may not continue this one.
    with pytest.raises(ConfigError, match="different settings.*seed"):
        ControlTrainer(_config(data_dir, out, rounds=4, seed=1)).train()


@pytest.mark.parametrize("survival_bonus, scale", [(True, 1.0), (False, 2.0)])
def test_replay_minibatches_are_relabelled_with_the_current_reward(survival_bonus, scale, data_dir, tmp_path):
    config = _config(data_dir, tmp_path, rounds=1, survival_bonus=survival_bonus, sac_reward_scale=scale)
    trainer = ControlTrainer(config)
    trainer._build()
    trainer.model.learn(250)
    buf = trainer.model.replay_buffer
    # Change the reward after the transitions were stored: minibatches must follow at once.
    with torch.no_grad():
        last = trainer.reward_net.mlp[-1]
        last.weight.zero_()
        last.bias.fill_(2.0)
    batch = buf.sample(64)
    expected = scale * (10.0 * math.tanh(2.0 / 10.0) + (10.0 if survival_bonus else 0.0))
    torch.testing.assert_close(batch.rewards, torch.full((64, 1), expected))
    assert not np.allclose(buf.rewards[:250], expected)  # the env's rewards stay stored


@pytest.mark.parametrize("survival_bonus", [False, True])
def test_buffer_normalization_gives_sac_a_unit_spread_reward(survival_bonus, data_dir, tmp_path):
    config = _config(
        data_dir,
        tmp_path,
        rounds=1,
        survival_bonus=survival_bonus,
        sac_reward_normalization="buffer",
        sac_reward_scale=2.0,
    )
    trainer = ControlTrainer(config)
    trainer._build()
    # Before SAC stored anything, the statistics come from the data's states.
    logs = trainer._fit_sac_reward_normalization()
    with torch.no_grad():
        on_data = trainer.reward_net(torch.as_tensor(trainer.data_obs), torch.as_tensor(trainer.data_act))
    assert logs["sac_reward/std"] == pytest.approx(on_data.std().item(), rel=1e-5)
    trainer.model.learn(250)
    with torch.no_grad():  # a reward whose spread is tiny: normalisation must still give SAC unit spread
        trainer.reward_net.mlp[-1].weight.copy_(0.05 * torch.sign(trainer.reward_net.mlp[-1].weight))
    trainer._fit_sac_reward_normalization()
    buf = trainer.model.replay_buffer
    obs, act = torch.as_tensor(buf.observations[:250, 0]), torch.as_tensor(buf.actions[:250, 0])
    with torch.no_grad():
        raw = trainer.reward_net(obs, act)
        seen = trainer.model.replay_buffer.reward_fn(obs, act)
    assert 1e-3 < raw.std().item() < 0.5  # above the divisor's floor (1e-3), well below 1
    torch.testing.assert_close(seen.std(), torch.tensor(2.0), rtol=1e-3, atol=0)
    if survival_bonus:  # shifted so that no stored state pays less than 0 (ending early never pays)
        torch.testing.assert_close(seen.min(), torch.tensor(0.0), rtol=0, atol=1e-5)
    else:
        torch.testing.assert_close(seen.mean(), torch.tensor(0.0), rtol=0, atol=1e-5)
    # Deterministic (no RNG drawn), so a resumed run recomputes the same values.
    state = trainer.rng.bit_generator.state
    before = (trainer.sac_reward_offset, trainer.sac_reward_divisor)
    trainer._fit_sac_reward_normalization()
    assert (trainer.sac_reward_offset, trainer.sac_reward_divisor) == before
    assert trainer.rng.bit_generator.state == state


@pytest.mark.parametrize("method", ["pref_rl", "ml_irl", "two_stage", "bc"])
def test_baselines_run_on_the_same_data(method, data_dir, tmp_path):
    config = _config(data_dir, tmp_path / method, method=method, rounds=1, sac_steps_per_round=250, learning_starts=200)
    trainer = ControlTrainer(config)
    expected = {"pref_rl": (0.0, 1.0), "ml_irl": (1.0, 0.0), "two_stage": (1.0, 0.0), "bc": (0.0, 0.0)}[method]
    assert (trainer.demo_weight, trainer.pref_weight) == expected
    result = trainer.train()
    assert math.isfinite(result["final"]["return_mean"])
    assert os.path.isfile(tmp_path / method / "policy.safetensors")
    if method != "bc":  # the learned reward, as aihf control bench --reward_quality reads it back
        from aihf.control.reward_quality import load_run_reward

        x = torch.randn(5, trainer.data_obs.shape[-1])
        torch.testing.assert_close(load_run_reward(str(tmp_path / method), x.shape[-1], 1)(x), trainer.reward_net(x))


# ----------------------------------------------------------------------------- CLI
def test_cli_train_and_eval_as_a_user_types_them(data_dir, tmp_path, capsys):
    out = tmp_path / "bc"
    argv = [
        "train",
        "--method",
        "bc",
        "--env_id",
        ENV,
        "--demonstrations",
        str(data_dir / "demos.npz"),
        "--output_dir",
        str(out),
        "--bc_steps",
        "50",
        "--final_eval_episodes",
        "1",
        "--progress",
        "false",
    ]
    assert cli.main(argv) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["method"] == "bc" and trained["num_demonstrations"] == 2 and trained["final"]["episodes"] == 1
    assert cli.main(["eval", "--run_dir", str(out), "--episodes", "1", "--seed", "1000000"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["return_mean"] == pytest.approx(trained["final"]["return_mean"])  # same policy, same episode


@pytest.mark.parametrize("method", ["bc", "ml_irl"])
def test_cli_eval_needs_the_run_folder_only_not_its_data(data_dir, tmp_path, capsys, method):
    """A run folder copied elsewhere (its data left behind) still evaluates, normalised against the
    reference returns its result.json recorded."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    out = tmp_path / "run"
    argv = ["train", "--preset", "ci", "--env_id", ENV, "--method", method, "--demonstrations", str(data / "demos.npz")]
    argv += ["--rounds", "1", "--sac_steps_per_round", "300", "--learning_starts", "100", "--bc_steps", "20"]
    assert cli.main([*argv, "--eval_episodes", "1", "--output_dir", str(out), "--progress", "false"]) == 0
    trained = json.loads(capsys.readouterr().out)
    shutil.rmtree(data)
    assert cli.main(["eval", "--run_dir", str(out), "--episodes", "2"]) == 0
    captured = capsys.readouterr()
    evaluated = json.loads(captured.out)
    result = json.loads((out / "result.json").read_text())
    expected = (evaluated["return_mean"] - result["random_return"]) / (
        result["expert_return"] - result["random_return"]
    )
    assert evaluated["method"] == trained["method"] == method and captured.err == ""
    assert evaluated["normalized_return"] == pytest.approx(expected)


def test_cli_trains_on_a_hand_written_file_and_says_why_scores_are_nan(tmp_path, capsys):
    """A user's own data, written with np.savez from docs/control.md's table alone (no meta.json):
    the run works, stdout says where it went, and stderr says why normalized_return is null."""
    rng = np.random.default_rng(0)
    demos = _write(
        tmp_path / "demos.npz",
        observations=rng.uniform(-1, 1, (30, 3)),
        actions=rng.uniform(-2, 2, (30, 1)),
        episode_lengths=np.array([10, 20]),
    )
    out = tmp_path / "run"
    argv = ["train", "--preset", "ci", "--env_id", ENV, "--method", "bc", "--demonstrations", demos]
    argv += ["--bc_steps", "5", "--final_eval_episodes", "1", "--output_dir", str(out)]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    trained = json.loads(captured.out)
    assert trained["output_dir"] == str(out) and (out / "result.json").is_file()
    # NaN is written as null: bare NaN is not JSON (jq and JavaScript reject it).
    assert trained["num_demonstrations"] == 2 and trained["final"]["normalized_return"] is None
    assert "NaN" not in captured.out and "NaN" not in (out / "result.json").read_text()
    assert json.loads((out / "result.json").read_text())["final"]["normalized_return"] is None
    assert "normalized_return will be null (NaN): no reference returns" in captured.err
    # eval has no --reference_returns: its line points at train, where the flag is.
    assert cli.main(["eval", "--run_dir", str(out), "--episodes", "1"]) == 0
    err = capsys.readouterr().err
    why = "the run recorded no reference returns (train it with"
    assert f"aihf control eval: normalized_return will be null (NaN): {why}" in err


def test_video_of_a_mujoco_episode(tmp_path):
    """``eval --video``'s writer on InvertedPendulum-v5, rendered off-screen with EGL in a child
    process (MUJOCO_GL must be set before MuJoCo's GL back end loads)."""
    pytest.importorskip("imageio_ffmpeg")
    import subprocess
    import sys

    path = tmp_path / "episode.mp4"
    code = (
        "import json, numpy as np; from aihf.control.cli import record_video; "
        f"print(json.dumps(record_video(lambda o: np.zeros(1, np.float32), 'InvertedPendulum-v5', {str(path)!r}, 0)))"
    )
    env = {**os.environ, "MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0 and "cannot render off-screen here" in proc.stderr:
        pytest.skip(proc.stderr.strip().splitlines()[-1])  # no EGL on this machine
    assert proc.returncode == 0, proc.stderr
    frames = json.loads(proc.stdout.strip().splitlines()[-1])
    assert frames >= 2  # the reset frame and at least one step (zero torque lets the pole fall)
    import imageio.v2 as imageio

    with imageio.get_reader(str(path)) as video:
        assert sum(1 for _ in video) == frames
    assert not list(tmp_path.glob("*.tmp*"))


def test_video_without_a_renderer_or_writer_is_one_line_exit_2(data_dir, tmp_path, capsys, monkeypatch):
    import builtins

    out = tmp_path / "bc"
    base = ["--method", "bc", "--env_id", ENV, "--demonstrations", str(data_dir / "demos.npz")]
    assert cli.main(["train", *base, "--output_dir", str(out), "--bc_steps", "5", "--final_eval_episodes", "1"]) == 0
    capsys.readouterr()
    real_import = builtins.__import__

    def no_ffmpeg(name, *args, **kwargs):
        if name == "imageio_ffmpeg":
            raise ImportError("No module named 'imageio_ffmpeg'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ffmpeg)
    video = tmp_path / "v.mp4"
    assert cli.main(["eval", "--run_dir", str(out), "--episodes", "1", "--video", str(video)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'aihf[video]'" in err and "imageio_ffmpeg" in err
    assert not video.exists()


def test_listing_into_a_closed_pipe_ends_quietly(tmp_path):
    """``aihf control bench --list | head``: the reader closes the pipe early; no traceback. (The
    paper preset lists ~400 KB, more than a pipe buffers, so the writer does meet the closed pipe.)"""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for entry in (["aihf", "control"], ["aihf.control.cli"]):
        cmd = [sys.executable, "-m", *entry, "bench", "--preset", "paper", "--list", "--data_root", str(tmp_path)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        first = proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 141, err
        assert first.startswith(b"python -m aihf.control.cli collect --preset paper") and err == "", err


def test_cli_bc_refuses_an_output_dir_holding_another_run(data_dir, tmp_path, capsys):
    """bc has no checkpoint, yet it may not overwrite another run's result and policy, and a SAC
    method may not overwrite a finished bc run: one line, exit 2, the files untouched."""
    base = ["--env_id", ENV, "--demonstrations", str(data_dir / "demos.npz"), "--progress", "false"]
    sac = ["--rounds", "1", "--sac_steps_per_round", "50", "--learning_starts", "20", "--batch_size", "16"]
    sac += ["--reward_steps_per_round", "1", "--eval_episodes", "1", "--final_eval_episodes", "1"]
    bc = ["--method", "bc", "--bc_steps", "5", "--final_eval_episodes", "1"]
    aihf_run, bc_run = tmp_path / "aihf", tmp_path / "bc"
    assert cli.main(["train", *base, *sac, "--output_dir", str(aihf_run)]) == 0
    assert cli.main(["train", *base, *bc, "--output_dir", str(bc_run)]) == 0
    capsys.readouterr()
    for run, argv in ((aihf_run, bc), (bc_run, sac)):
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        assert cli.main(["train", *base, *argv, "--output_dir", str(run)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "different settings" in err and "method" in err, err
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    # The same bc run again is allowed, and --resume false overwrites on purpose.
    assert cli.main(["train", *base, *bc, "--output_dir", str(bc_run)]) == 0
    assert cli.main(["train", *base, *bc, "--resume", "false", "--output_dir", str(aihf_run)]) == 0
    assert json.loads((aihf_run / "result.json").read_text())["method"] == "bc"


def test_cli_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys):
    bad = _write(
        tmp_path / "demos.npz", observations=np.zeros((2, 3)), actions=np.zeros((2, 1)), episode_lengths=np.array([3])
    )
    out = tmp_path / "out"
    assert cli.main(["train", "--env_id", ENV, "--demonstrations", bad, "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"aihf control train: {bad}, field 'observations': has 2 rows but episode_lengths sum to 3"
    assert not out.exists()
    assert cli.main(["train", "--env_id", ENV, "--demonstrations", bad, "--rounds", "0", "--output_dir", str(out)]) == 2
    assert "rounds=0 (from the flags) must be >= 1" in capsys.readouterr().err
    assert cli.main(["train", "--env_id", "NoSuchEnv-v0", "--demonstrations", bad]) == 2
    assert "env_id='NoSuchEnv-v0'" in capsys.readouterr().err
    assert cli.main(["collect", "--env_id", ENV, "--snapshots", "0", "--output_dir", str(out)]) == 2
    assert "snapshots=0 (from the flags) must be >= 1" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--help"])
    assert e.value.code == 0
    assert "w_P: weight of the Bradley-Terry preference term" in " ".join(capsys.readouterr().out.split())


# ----------------------------------------------------------------------------- benchmark harness
def test_bench_lists_one_command_per_run_skips_finished_ones_and_reports(tmp_path, capsys):
    from aihf.control import bench

    runs = bench.plan("cpu")
    # 2 envs x 3 seeds x (expert1: ml_irl, bc, the 2 null rewards, true_reward, aihf and pref_rl at 10 pairs,
    #                     + two_stage at 100; expert4 and low1: ml_irl, bc, aihf)
    assert len(runs) == 2 * 3 * (10 + 3 + 3) and len({(r.env_id, r.name) for r in runs}) == len(runs)
    assert {(r.setting, r.method) for r in runs if r.method.startswith("null_")} == {
        ("expert1_p0", "null_constant"),
        ("expert1_p0", "null_untrained"),
    }
    assert sum(r.method == "bc" for r in runs) == 2 * 3 * 3
    assert {r.setting for r in runs if r.method == "pref_rl"} == {"expert1_p10", "expert1_p100"}
    assert bench.collect_argv("cpu", "Hopper-v5", "d")[-4:] == ["--expert_steps", "300000", "--train_freq", "1"]
    assert bench.collect_argv("cpu", "HalfCheetah-v5", "d")[-2:] == ["--progress", "false"]
    # The ci preset's 5k-step demonstrator is within noise of random, which collect refuses (exit 2) unless
    # told to keep it: without the flag `aihf control bench --preset ci` stopped at its own data.
    for env_id in ("Pendulum-v1", "Hopper-v5"):
        argv = bench.collect_argv("ci", env_id, "d")
        assert argv[0] == "collect" and parse_config(CollectConfig, argv[1:], "c", "").accept_weak_demonstrator
    cpu = parse_config(CollectConfig, bench.collect_argv("cpu", "Hopper-v5", "d")[1:], "c", "")
    assert not cpu.accept_weak_demonstrator
    results = tmp_path / "results"
    common = ["--preset", "ci", "--results", str(results), "--data_root", str(tmp_path / "data")]
    assert bench.main([*common, "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 8 and lines[0].startswith("python -m aihf.control.cli collect --preset ci")
    aihf_line = next(line for line in lines if "--method aihf" in line)
    assert "--num_demonstrations 1 --preferences" in aihf_line and "--num_preferences 10" in aihf_line

    # A finished run (its result file exists) is marked done and left out of the work.
    aihf_run = next(r for r in bench.plan("ci") if r.method == "aihf")
    for run, score in ((bench.plan("ci")[0], 0.5), (aihf_run, 0.9)):
        path = bench.result_path(str(results), run)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        history = [{"env_steps": 1000, "normalized_return": score / 2}, {"env_steps": 2000, "normalized_return": score}]
        with open(path, "w") as f:
            json.dump(
                {
                    "seed": run.seed,
                    "final": {"normalized_return": score, "return_mean": -100.0},
                    "history": history,
                    "timing": {},
                },
                f,
            )
    assert bench.main([*common, "--list"]) == 0
    assert sum(line.startswith("# done: ") for line in capsys.readouterr().out.splitlines()) == 2
    assert bench.main([*common, "--report"]) == 0
    table = (results / "results.md").read_text()
    assert "| expert1 | 0 | 0.50 ± 0.00 (1) | n/a | 0.50 ± 0.00 (1) | n/a | – | – | – |" in table
    assert "| expert1 | 10 | 0.90 ± 0.00 (1) | – | 0.50 ± 0.00 (1) | – | – | – | – |" in table
    # Paired by seed: AIHF (final 0.9, late mean of [0.45, 0.9]) minus ML-IRL (0.5; [0.25, 0.5]); the
    # baselines without a result file for that seed get no row.
    assert "| Pendulum-v1 | expert1 | 10 | ml_irl | +0.40 [+0.40] | 1/1 | +0.30 [+0.30] | 1/1 |" in table
    assert "| 10 | pref_rl |" not in table and "| 10 | bc |" not in table
    paired = json.loads((results / "results.json").read_text())["paired"]
    assert [(r["baseline"], r["seeds"]) for r in paired] == [("ml_irl", [0])]
    assert (results / "curves_Pendulum-v1.png").stat().st_size > 1000
