"""``--method true_reward`` (issue 23): the same SAC loop on the env's own reward, the reference a
perfect learned reward could reach at the budget, and its place in the benchmark."""

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

from aihf import ConfigError, DataError  # noqa: E402
from aihf.control import bench, cli  # noqa: E402
from aihf.control.config import METHOD_IGNORES, ControlConfig, unused_settings  # noqa: E402
from aihf.control.reward import RewardNet  # noqa: E402
from aihf.control.trainer import ControlTrainer  # noqa: E402

from .helpers import ENV, pendulum_config  # noqa: E402

NUM_PREFERENCES = 20  # the data_dir fixture's pairs (conftest.py)


def _config(data_dir, out, **kw):
    """A tiny true_reward run: no data files, the references from the data set's meta.json, and the
    learned rewards' defaults left as they are (survival bonus on, buffer normalisation) to show they
    change nothing."""
    settings = dict(
        method="true_reward",
        demonstrations=None,
        preferences=None,
        reference_returns=str(data_dir / "meta.json"),
        rounds=2,
        sac_steps_per_round=150,
        learning_starts=50,
        eval_episodes=1,
        final_eval_episodes=1,
        sac_reward_normalization="buffer",
    )
    return pendulum_config(data_dir, out, **{**settings, **kw})


def _replayed_rewards(buf, size: int) -> np.ndarray:
    """Each stored transition replayed through Gymnasium's Pendulum-v1: the env set to the stored
    observation's (angle, speed), stepped with the stored action in the env's units."""
    import gymnasium as gym

    env = gym.make(ENV)
    env.reset(seed=0)
    out = []
    for i in range(size):
        cos, sin, speed = buf.observations[i, 0]
        env.unwrapped.state = np.array([np.arctan2(sin, cos), speed], dtype=np.float64)
        action = buf.actions[i, 0] * env.action_space.high  # SAC stores actions in [-1, 1]
        out.append(env.step(action)[1])
    return np.asarray(out, dtype=np.float32)


def test_true_reward_trains_sac_on_the_envs_reward_and_never_the_reward_net(data_dir, tmp_path, monkeypatch):
    """SAC's stored and sampled rewards are the env's own (a replay of the stored actions gives them
    back), unshifted although survival_bonus is on; the reward net is never called nor trained."""

    def never(*args, **kwargs):
        raise AssertionError("true_reward called the reward net")

    monkeypatch.setattr(RewardNet, "forward", never)
    trainer = ControlTrainer(_config(data_dir, tmp_path / "run"))
    result = trainer.train()
    buf = trainer.model.replay_buffer
    assert buf.reward_fn is None and buf.pos == 300
    stored = buf.rewards[: buf.pos, 0]
    np.testing.assert_allclose(stored, _replayed_rewards(buf, buf.pos), rtol=1e-5, atol=1e-4)
    assert stored.max() <= 0 and stored.min() < -1  # Pendulum's own cost: no +bound shift, no rescaling
    batch = buf.sample(64)
    assert torch.all(batch.rewards <= 0) and set(batch.rewards.flatten().tolist()) <= set(stored.tolist())
    assert trainer.reward_optimizer.state == {}  # never stepped
    assert result["method"] == "true_reward" and result["demo_weight"] == result["pref_weight"] == 0
    assert result["num_demonstrations"] == result["num_preferences"] == 0
    assert result["survival_bonus"] == {"on": False, "shift": "none", "terminated_episodes": 0}
    assert not any(k.startswith("sac_reward/") or k.startswith("reward/") for h in result["history"] for k in h)
    assert np.isfinite(result["final"]["normalized_return"])  # the references come from --reference_returns
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["method"] == "true_reward" and saved["final"] == result["final"]


def test_true_reward_resumes_exactly(data_dir, tmp_path):
    """One round, stopped, resumed to two: the same history and SAC weights as two rounds in one go."""
    reference = ControlTrainer(_config(data_dir, tmp_path / "one_go"))
    expected = reference.train()
    ControlTrainer(_config(data_dir, tmp_path / "stopped", rounds=1)).train()
    resumed = ControlTrainer(_config(data_dir, tmp_path / "stopped"))
    got = resumed.train()
    assert [h["round"] for h in got["history"]] == [1, 2] and got["final"]["env_steps"] == 300
    assert got["history"] == expected["history"]
    for name, value in reference.model.policy.state_dict().items():
        assert torch.equal(resumed.model.policy.state_dict()[name], value), name


def test_a_changed_setting_the_method_does_not_use_does_not_block_resume(data_dir, tmp_path):
    """train warns that --survival_bonus is not used by true_reward; a rerun with it changed continues
    the run (it refused before: "written with different settings (survival_bonus)"). A setting the
    method uses still refuses, and so does another method in the folder."""
    ControlTrainer(_config(data_dir, tmp_path, rounds=1)).train()
    unused = dict(survival_bonus=False, reward_bound=3.0, sac_reward_normalization="none", demo_loss="logistic")
    got = ControlTrainer(_config(data_dir, tmp_path, **unused)).train()
    assert [h["round"] for h in got["history"]] == [1, 2] and got["final"]["env_steps"] == 300
    with pytest.raises(ConfigError, match=r"different settings \(gamma\)"):
        ControlTrainer(_config(data_dir, tmp_path, rounds=3, gamma=0.9)).train()
    other = dict(method="null_constant", demonstrations=str(data_dir / "demos.npz"))
    with pytest.raises(ConfigError, match=r"different settings \(.*\bmethod\b"):
        ControlTrainer(_config(data_dir, tmp_path, rounds=3, **other)).train()


def test_ctrl_c_is_one_line_and_the_rerun_continues(data_dir, tmp_path, monkeypatch, capsys):
    """Ctrl-C during round 2 printed torch's traceback; now one line (exit 130) saying how to continue,
    and the same command resumes from round 1's checkpoint."""
    out = tmp_path / "run"
    argv = ["train", "--preset", "ci", "--env_id", ENV, "--method", "true_reward", "--rounds", "2"]
    argv += ["--sac_steps_per_round", "150", "--learning_starts", "50", "--eval_episodes", "1"]
    argv += ["--final_eval_episodes", "1", "--progress", "false", "--output_dir", str(out)]
    evaluate = ControlTrainer._evaluate

    def interrupted(self, round_):
        if round_ == 2:
            raise KeyboardInterrupt
        return evaluate(self, round_)

    monkeypatch.setattr(ControlTrainer, "_evaluate", interrupted)
    assert cli.main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    resume = "rerun the same command to continue from the last finished round"
    assert err[-1] == f"aihf control train: interrupted: {resume}"
    assert "Traceback" not in "\n".join(err) and not (out / "result.json").exists()
    evaluated = []

    def recorded(self, round_):
        evaluated.append(round_)
        return evaluate(self, round_)

    monkeypatch.setattr(ControlTrainer, "_evaluate", recorded)
    assert cli.main(argv) == 0
    assert evaluated == [2]  # resumed after round 1, not started afresh
    assert f"resuming {out} after round 1 of 2 (150 env steps done)" in capsys.readouterr().err.splitlines()
    result = json.loads((out / "result.json").read_text())
    assert [h["round"] for h in result["history"]] == [1, 2] and result["final"]["env_steps"] == 300
    assert result["timing"]["cpu_s"] > 0  # the run's own CPU seconds, both sittings


def test_irrelevant_flags_warn_as_for_the_null_methods_and_the_startup_line_says_what_sac_sees(
    data_dir, tmp_path, capsys
):
    argv = ["train", "--preset", "ci", "--env_id", ENV, "--method", "true_reward", "--rounds", "1"]
    argv += ["--sac_steps_per_round", "150", "--learning_starts", "50", "--net_arch", "8", "--eval_episodes", "1"]
    argv += ["--final_eval_episodes", "1", "--progress", "false", "--output_dir", str(tmp_path / "run")]
    argv += ["--reference_returns", str(data_dir / "meta.json")]
    given = ["--survival_bonus", "false", "--reward_steps_per_round", "5", "--num_demonstrations", "3"]
    given += ["--preferences", "no/such/prefs.npz", "--sac_reward_scale", "2"]
    # Warned, not refused, and the files are never opened; demonstrations (as for pref_rl) only locates the
    # default reference returns, which --reference_returns gives here.
    given += ["--demonstrations", "no/such/demos.npz"]
    assert cli.main([*argv, *given]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert warnings == [
        f"aihf control train: warning: --{name} {value} is not used by --method true_reward"
        for name, value in (
            ("preferences", "no/such/prefs.npz"),
            ("num_demonstrations", 3),
            ("sac_reward_scale", 2.0),
            ("survival_bonus", "false"),
            ("reward_steps_per_round", 5),
        )
    ]
    startup = [line for line in captured.err.splitlines() if "SAC is trained on" in line]
    assert startup == [
        "aihf control train: true_reward: SAC is trained on the env's own reward as Gymnasium returns it (no "
        "learned reward, no survival-bonus shift, no normalisation): what a perfect learned reward could reach at "
        "this budget, a reference, not a method from the data"
    ]
    out = json.loads(captured.out)
    assert out["method"] == "true_reward" and out["survival_bonus"]["shift"] == "none"
    assert json.loads((tmp_path / "run" / "result.json").read_text())["method"] == "true_reward"
    # Every setting a null method ignores as a reward-step or data setting, true_reward ignores too; the
    # SAC, budget and evaluation settings it uses.
    ignored = set(METHOD_IGNORES["true_reward"])
    assert set(METHOD_IGNORES["null_constant"]) <= ignored and "demonstrations" not in ignored
    assert ignored.isdisjoint({"env_id", "seed", "net_arch", "batch_size", "rounds", "reference_returns", "gamma"})
    config = ControlConfig(method="true_reward", num_preferences=0)
    assert unused_settings(config, {"preferences", "num_preferences", "seed"}) == []  # "no pairs" said explicitly


def test_true_reward_needs_no_data_files(data_dir, tmp_path):
    ControlConfig(method="true_reward", demonstrations=None).validate()
    with pytest.raises(ConfigError, match="is required for method=null_constant"):
        ControlConfig(method="null_constant", demonstrations=None).validate()
    # A demonstrations path is never opened, but as for pref_rl the meta.json beside it gives the reference
    # returns when --reference_returns is not set: a missing file is an error, not silently no scores.
    missing = r"none\.npz.*no such file \(method=true_reward reads only the meta\.json beside it"
    with pytest.raises(DataError, match=missing):
        ControlTrainer(_config(data_dir, tmp_path / "a", demonstrations=str(tmp_path / "none.npz"),
                               reference_returns=None))  # fmt: skip
    assert not (tmp_path / "a").exists()
    beside = ControlTrainer(_config(data_dir, tmp_path / "b", demonstrations=str(data_dir / "demos.npz"),
                                    reference_returns=None))  # fmt: skip
    meta = json.loads((data_dir / "meta.json").read_text())
    assert (beside.random_return, beside.expert_return) == (meta["random_return"], meta["expert_return"])
    assert beside.demos is None


# ----------------------------------------------------------------------------- the benchmark
@pytest.mark.parametrize("preset", ["ci", "cpu", "long", "paper"])
def test_bench_plan_runs_true_reward_once_per_env_and_seed_without_data_flags(preset):
    runs = bench.plan(preset)
    spec = bench.PLANS[preset]
    true = [r for r in runs if r.method == "true_reward"]
    assert sorted((r.env_id, r.seed) for r in true) == sorted((e, k) for e in spec["envs"] for k in spec["seeds"])
    assert {r.setting for r in true} == {"expert1_p0"}
    argv = bench.train_argv(true[0], preset, "data", "results", "work")
    assert "--demonstrations" not in argv and "--preferences" not in argv and "--num_preferences" not in argv
    assert argv[argv.index("--reference_returns") + 1] == os.path.join("data", true[0].env_id, "meta.json")
    config, given = cli.parse_flags(ControlConfig, argv[1:], "t", "")
    assert unused_settings(config.validate(), given) == []  # its command draws no warning
    assert bench.result_path("r", true[0]).endswith(f"expert1_p0__true_reward__seed{true[0].seed}.json")


def _write(results, setting, method, score, seed=0):
    run = bench.Run(ENV, setting, method, seed)
    path = bench.result_path(str(results), run)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    history = [{"env_steps": 1000, "normalized_return": score / 2}, {"env_steps": 2000, "normalized_return": score}]
    with open(path, "w") as f:
        json.dump({"seed": seed, "final": {"normalized_return": score, "return_mean": 0.0}, "history": history,
                   "timing": {}}, f)  # fmt: skip


def test_bench_report_shows_true_reward_as_a_reference_not_a_learned_reward(tmp_path):
    results = tmp_path / "results"
    for setting, method, score in (
        ("expert1_p0", "null_constant", 0.5),
        ("expert1_p0", "null_untrained", 0.1),
        ("expert1_p0", "ml_irl", 0.3),
        ("expert1_p0", "true_reward", 0.7),
        ("expert1_p10", "aihf", 0.9),
    ):
        _write(results, setting, method, score)
    assert bench.main(["--preset", "ci", "--results", str(results), "--report"]) == 0
    table = (results / "results.md").read_text()
    header = "| demos | pairs | aihf | pref_rl | ml_irl | two_stage | bc | null_constant | null_untrained | true_reward |"
    assert header in table
    # Its one run is repeated in every row, like the null rewards' (and, not a learned reward, never flagged).
    references = "| 0.50 ± 0.00 (1) | 0.10 ± 0.00 (1) | 0.70 ± 0.00 (1) |"
    assert "| expert1 | 0 | 0.30 ± 0.00 (1) † | n/a | 0.30 ± 0.00 (1) † | n/a | – " + references in table
    assert "| expert1 | 10 | 0.90 ± 0.00 (1) | – | 0.30 ± 0.00 (1) † | – | – " + references in table
    assert "true_reward: SAC on the env's own reward" in table
    # AIHF minus the true reward, paired by seed (0.9 - 0.7; late: mean of [0.45, 0.9] minus of [0.35, 0.7]).
    assert "| Pendulum-v1 | expert1 | 10 | true_reward | +0.20 [+0.20] | 1/1 | +0.15 [+0.15] | 1/1 |" in table
    summary = json.loads((results / "results.json").read_text())
    assert {(d["method"], d["null"]) for d in summary["null_paired"]} == {
        (m, n) for m in ("ml_irl", "aihf") for n in ("null_constant", "null_untrained")
    }
    assert summary["table"][ENV]["expert1_p0"]["true_reward"]["mean"] == 0.7
    assert (results / "curves_Pendulum-v1.png").stat().st_size > 1000


def test_bench_report_without_true_reward_runs_has_no_true_reward_column(tmp_path):
    results = tmp_path / "results"
    _write(results, "expert1_p0", "ml_irl", 0.3)
    _write(results, "expert1_p10", "aihf", 0.9)
    assert bench.main(["--preset", "ci", "--results", str(results), "--report"]) == 0
    table = (results / "results.md").read_text()
    assert "| demos | pairs | aihf | pref_rl | ml_irl | two_stage | bc | null_constant | null_untrained |\n" in table
    assert "true_reward" not in table
