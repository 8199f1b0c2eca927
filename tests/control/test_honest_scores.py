"""Scores that mean what they say (issue 23): the null-reward baselines and their table, the
survival bonus said and recorded, a weak demonstrator refused or warned about, the final score over
``final_eval_episodes``, the balance of the reward's two terms, and the ``long`` preset's plan."""

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

from aihf.control import bench, cli  # noqa: E402
from aihf.control.config import CollectConfig, ControlConfig  # noqa: E402
from aihf.control.references import check_demonstrator  # noqa: E402
from aihf.control.reward import RewardBatch, RewardNet, reward_loss  # noqa: E402
from aihf.control.trainer import ControlTrainer  # noqa: E402

from .helpers import ENV, controller, pendulum_config, pendulum_dataset  # noqa: E402


NUM_PREFERENCES = 20  # the data_dir fixture's pairs (conftest.py)


def _config(data_dir, out, **kw):
    settings = dict(
        rounds=2,
        sac_steps_per_round=150,
        learning_starts=50,
        reward_batch_size=32,
        reward_steps_per_round=3,
        final_eval_episodes=3,
    )
    return pendulum_config(data_dir, out, **{**settings, **kw})


# ----------------------------------------------------------------------------- null rewards
@pytest.mark.parametrize(
    "survival_bonus, normalization, expected",
    [(True, "none", 10.0), (False, "none", 0.0), (True, "buffer", 10.0), (False, "buffer", 0.0)],
)
def test_null_constant_gives_sac_a_constant_and_never_trains(
    data_dir, tmp_path, survival_bonus, normalization, expected
):
    """SAC's minibatches carry exactly 0 shifted by the survival bonus (reward_bound), under either
    normalisation (a constant has no spread to standardise); no reward step is taken."""
    config = _config(data_dir, tmp_path, method="null_constant", survival_bonus=survival_bonus)
    config.sac_reward_normalization = normalization
    trainer = ControlTrainer(config)
    result = trainer.train()
    rewards = trainer.model.replay_buffer.sample(64).rewards
    assert torch.equal(rewards, torch.full_like(rewards, expected))
    assert trainer.reward_optimizer.state == {}  # Adam keeps no moments: never stepped
    assert result["demo_weight"] == result["pref_weight"] == 0 and result["num_preferences"] == 0
    assert [h["episodes"] for h in result["history"]] == [1, 3]  # the final score: final_eval_episodes
    assert result["survival_bonus"] == {
        "on": survival_bonus,
        "shift": "+10" if survival_bonus else "none",
        "terminated_episodes": 0,  # Pendulum never ends early
    }


def test_null_untrained_is_the_initial_reward_net_standardised_like_a_learned_one(data_dir, tmp_path):
    trainer = ControlTrainer(_config(data_dir, tmp_path, method="null_untrained", sac_reward_normalization="buffer"))
    result = trainer.train()
    torch.manual_seed(0)  # as _build seeds it
    fresh = RewardNet(3, 1, (16, 16), bound=10.0)
    trained = trainer.reward_net.state_dict()
    for name, value in fresh.state_dict().items():
        if name not in ("mean", "std"):
            assert torch.equal(trained[name], value), name  # never trained
    assert trainer.reward_optimizer.state == {}
    # ... and standardised over the buffer as a learned reward is: unit spread, lowest sample at 0.
    assert result["history"][-1]["sac_reward/std"] > 0 and trainer.sac_reward_divisor == pytest.approx(
        result["history"][-1]["sac_reward/std"]
    )


def test_the_survival_bonus_is_said_once_and_counted_where_episodes_end_early(tmp_path, capsys):
    """InvertedPendulum-v5 ends an episode when the pole falls: SAC's random early episodes end
    early many times, and result.json counts them. `train` says once whether the bonus is on."""
    rng = np.random.default_rng(0)
    demos = tmp_path / "demos.npz"
    np.savez(demos, observations=rng.normal(0, 0.05, (40, 4)), actions=rng.uniform(-1, 1, (40, 1)),
             episode_lengths=np.array([20, 20]))  # fmt: skip
    argv = ["train", "--env_id", "InvertedPendulum-v5", "--method", "null_constant", "--demonstrations", str(demos)]
    argv += ["--rounds", "1", "--sac_steps_per_round", "300", "--learning_starts", "300", "--net_arch", "8"]
    argv += ["--eval_episodes", "1", "--final_eval_episodes", "1", "--progress", "false"]
    assert cli.main([*argv, "--output_dir", str(tmp_path / "on")]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "survival bonus" in line]
    assert len(lines) == 1 and lines[0].startswith("aihf control train: survival bonus on: SAC is trained on the")
    assert "envs that end episodes early" in lines[0] and "--survival_bonus false" in lines[0]
    record = json.loads(captured.out)["survival_bonus"]
    assert record["on"] is True and record["terminated_episodes"] > 5  # random actions topple it in ~10 steps
    saved = json.loads((tmp_path / "on" / "result.json").read_text())["survival_bonus"]
    assert saved == record
    assert cli.main([*argv, "--survival_bonus", "false", "--output_dir", str(tmp_path / "off")]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "survival bonus" in line] == [
        "aihf control train: survival bonus off: SAC is trained on r itself, negative where the reward says so; "
        "on envs that end episodes early, ending one can then be a way to escape negative reward "
        "(--survival_bonus true shifts r to >= 0)"
    ]


def _rows(env, setting, method, finals):
    return [
        {"env_id": env, "setting": setting, "method": method, "seed": k, "final": f, "late": f - 0.1,
         "return": 0.0, "history": [(1000, f - 0.1), (2000, f)], "timing": {}}
        for k, f in enumerate(finals)
    ]  # fmt: skip


def test_every_learned_reward_is_paired_with_the_null_rewards_and_flagged_when_not_above():
    from aihf.control.null_table import null_differences, null_table_lines

    env = "Hopper-v5"
    rows = [
        *_rows(env, "expert1_p0", "null_constant", [0.5, 0.5, 0.5]),
        *_rows(env, "expert1_p0", "null_untrained", [0.2, 0.3, 0.4]),
        *_rows(env, "expert1_p0", "ml_irl", [0.6, 0.4, 0.45]),  # above untrained, not above constant: 1 of 3 seeds
        *_rows(env, "expert1_p10", "aihf", [0.9, 0.8, 0.7]),
        *_rows(env, "expert1_p0", "bc", [0.0, 0.0, 0.0]),  # not a learned reward: not compared
    ]
    diffs = null_differences(rows)
    got = {(d["setting"], d["method"], d["null"]): d for d in diffs}
    assert set(got) == {(s, m, n) for s, m in (("expert1_p0", "ml_irl"), ("expert1_p10", "aihf"))
                        for n in ("null_constant", "null_untrained")}  # fmt: skip
    ml = got[("expert1_p0", "ml_irl", "null_constant")]
    assert ml["final"]["per_seed"] == pytest.approx([0.1, -0.1, -0.05]) and ml["final"]["wins"] == 1
    assert not ml["above"] and got[("expert1_p0", "ml_irl", "null_untrained")]["above"]
    assert got[("expert1_p10", "aihf", "null_constant")]["final"]["mean"] == pytest.approx(0.3)
    lines = null_table_lines(diffs)
    assert (
        "| Hopper-v5 | expert1 | 0 | ml_irl | null_constant | -0.02 [+0.10, -0.10, -0.05] | 1/3 "
        "| -0.02 [+0.10, -0.10, -0.05] | 1/3 | **not above null** |" in lines
    )
    assert sum(line.startswith("| Hopper") and "**not above null**" in line for line in lines) == 1


def test_bench_report_has_the_null_columns_the_flag_and_the_json(tmp_path, capsys):
    results = tmp_path / "results"
    rows = [
        ("expert1_p0", "null_constant", 0.5),
        ("expert1_p0", "null_untrained", 0.1),
        ("expert1_p0", "ml_irl", 0.3),
        ("expert1_p10", "aihf", 0.9),
    ]
    for setting, method, score in rows:
        run = bench.Run(ENV, setting, method, 0)
        path = bench.result_path(str(results), run)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        history = [{"env_steps": 1000, "normalized_return": score}, {"env_steps": 2000, "normalized_return": score}]
        result = {"seed": 0, "final": {"normalized_return": score, "return_mean": 0.0}, "history": history}
        with open(path, "w") as f:
            json.dump({**result, "timing": {}}, f)
    assert bench.main(["--preset", "ci", "--results", str(results), "--report"]) == 0
    table = (results / "results.md").read_text()
    # ML-IRL (0.3) is below null_constant (0.5): flagged wherever its value is shown; AIHF is above both.
    nulls = "| 0.50 ± 0.00 (1) | 0.10 ± 0.00 (1) |"
    assert "| expert1 | 0 | 0.30 ± 0.00 (1) † | n/a | 0.30 ± 0.00 (1) † | n/a | – " + nulls in table
    assert "| expert1 | 10 | 0.90 ± 0.00 (1) | – | 0.30 ± 0.00 (1) † | – | – " + nulls in table
    assert "## Learned rewards minus the null rewards, paired by seed" in table
    summary = json.loads((results / "results.json").read_text())
    verdicts = {(d["method"], d["null"]): d["above"] for d in summary["null_paired"]}
    assert verdicts == {
        ("ml_irl", "null_constant"): False,
        ("ml_irl", "null_untrained"): True,
        ("aihf", "null_constant"): True,
        ("aihf", "null_untrained"): True,
    }
    assert summary["table"][ENV]["expert1_p0"]["null_constant"]["mean"] == 0.5


def test_bench_report_says_when_the_data_has_a_weak_demonstrator_and_the_cpu_hours(tmp_path):
    """The ci sweep collects with --accept_weak_demonstrator: its table must then say so, not only the log."""
    results, data = tmp_path / "results", tmp_path / "data"
    run = bench.Run(ENV, "expert1_p0", "ml_irl", 0)
    path = bench.result_path(str(results), run)
    os.makedirs(os.path.dirname(path))
    history = [{"env_steps": 1000, "normalized_return": 1.2}]
    final = {"normalized_return": 1.2, "return_mean": 0.0}
    with open(path, "w") as f:
        json.dump({"seed": 0, "final": final, "history": history, "timing": {"cpu_s": 1800.0}}, f)
    argv = ["--preset", "ci", "--results", str(results), "--data_root", str(data), "--report"]
    assert bench.main(argv) == 0  # no data folder: the table without a word on the demonstrator
    assert "Weak demonstrator" not in (results / "results.md").read_text()
    rng = np.random.default_rng(0)
    check = check_demonstrator(ENV, rng.normal(-1297, 150, 10), rng.normal(-1018, 100, 10), 0.1)
    (data / ENV).mkdir(parents=True)
    (data / ENV / "meta.json").write_text(json.dumps({"demonstrator_check": check}))
    assert bench.main(argv) == 0
    table = (results / "results.md").read_text()
    assert f"## {ENV}\n\n**Weak demonstrator (weak)**: {check['message']}.\n\n| demos |" in table
    assert json.loads((results / "results.json").read_text())["demonstrator_checks"][ENV]["verdict"] == "weak"
    assert "Compute: 0.5 CPU-hours in 1 run (each run's own CPU seconds, resumptions included" in table


def test_bench_report_names_a_kept_refused_demonstrator_and_a_small_sweeps_cpu_minutes(tmp_path):
    """The ci data: collect refused its demonstrator (within noise) and kept it; its sweep is a few CPU-minutes."""
    results, data = tmp_path / "results", tmp_path / "data"
    for method, timing in (("ml_irl", {"cpu_s": 90.0}), ("bc", {"cpu_s": 6.0}), ("aihf", {})):
        path = bench.result_path(str(results), bench.Run(ENV, "expert1_p0", method, 0))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        final = {"normalized_return": 2.4, "return_mean": 0.0}
        with open(path, "w") as f:
            json.dump({"seed": 0, "final": final, "history": [{"env_steps": 1, **final}], "timing": timing}, f)
    check = check_demonstrator(ENV, np.array([-1700.0, -1620.0]), np.array([-1600.0, -1370.0]), 0.1)
    assert check["verdict"] == "refused" and "exceed 1" not in check["message"]
    (data / ENV).mkdir(parents=True)
    (data / ENV / "meta.json").write_text(json.dumps({"demonstrator_check": check}))
    assert bench.main(["--preset", "ci", "--results", str(results), "--data_root", str(data), "--report"]) == 0
    table = (results / "results.md").read_text()
    kept = "**Weak demonstrator (refused by collect, kept with --accept_weak_demonstrator)**"
    assert f"{kept}: {check['message']}; normalised scores are fractions of it and can exceed 1.\n" in table
    assert "Compute: 1.6 CPU-minutes in 2 runs (each run's own" in table  # 96 s, not "0.0 CPU-hours"
    assert "`timing.cpu_s`; collecting the data is not counted); 1 older run did not record it." in table
    # A meta.json that is not collect's (a hand-edited check) leaves the table without the line, no traceback.
    for check in ("weak", {"verdict": "weak"}, {"message": ["x"]}):
        (data / ENV / "meta.json").write_text(json.dumps({"demonstrator_check": check}))
        assert bench.main(["--preset", "ci", "--results", str(results), "--data_root", str(data), "--report"]) == 0
        assert "Weak demonstrator" not in (results / "results.md").read_text()


# ----------------------------------------------------------------------------- the demonstrator check
def test_check_demonstrator_on_the_issues_cases():
    rng = np.random.default_rng(0)
    around = lambda mean, std: rng.normal(mean, std, 10)  # noqa: E731
    # Pendulum-v1 after 10k SAC steps: -1018 against random -1297; the reference is -150: 24% of the gap.
    weak = check_demonstrator("Pendulum-v1", around(-1297, 150), around(-1018, 100), 0.1)
    assert weak["verdict"] == "weak" and 0.15 < weak["fraction_of_reference_gap"] < 0.35
    assert "closes only" in weak["message"] and "can exceed 1" in weak["message"]
    # InvertedDoublePendulum at 321 where ~9,350 is possible: refused below min_expert_fraction.
    refused = check_demonstrator("InvertedDoublePendulum-v5", around(60, 10), around(321, 30), 0.1)
    assert refused["verdict"] == "refused" and refused["fraction_of_reference_gap"] < 0.05
    assert check_demonstrator("InvertedDoublePendulum-v5", around(60, 10), around(321, 30), 0.0)["verdict"] == "weak"
    # Within noise of random, on an env without a reference: refused.
    noise = check_demonstrator("MyEnv-v0", around(-100, 50), around(-90, 50), 0.1)
    assert noise["verdict"] == "refused" and "not above random by more than noise" in noise["message"]
    assert noise["reference_return"] is None and noise["fraction_of_reference_gap"] is None
    # The committed benchmark data passes (HalfCheetah: 32% of D4RL's expert, a warning; Hopper: 64%).
    cheetah = check_demonstrator("HalfCheetah-v5", around(-284, 80), around(3748, 100), 0.1)
    hopper = check_demonstrator("Hopper-v5", around(17, 5), around(2059, 300), 0.1)
    assert (cheetah["verdict"], hopper["verdict"]) == ("weak", "ok") and hopper["message"] == ""


def test_collect_refuses_a_demonstrator_no_better_than_random_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from aihf.control import collect

    def weak_collect(config, command=""):  # the "expert" is a torque-noise policy: as bad as random
        pool = [controller(n, i) for i, n in enumerate((4.0, 2.0))]
        return collect.write_dataset(config, controller(50.0, 1), controller(50.0, 2), pool, command)

    monkeypatch.setattr(collect, "collect", weak_collect)
    out = tmp_path / "d"
    argv = ["collect", "--env_id", ENV, "--output_dir", str(out), "--num_demonstrations", "1", "--eval_episodes", "6"]
    argv += ["--pool_episodes_per_snapshot", "1", "--num_preferences", "5", "--progress", "false"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("aihf control collect: the demonstrator's return ")
    assert "nothing written" in err and "--accept_weak_demonstrator true" in err
    assert not out.exists()
    # Kept on purpose: written, with a warning, and the verdict in meta.json.
    assert cli.main([*argv, "--accept_weak_demonstrator", "true"]) == 0
    err = capsys.readouterr().err
    assert "aihf control collect: warning: the demonstrator's return" in err and "(kept:" in err
    assert json.loads((out / "meta.json").read_text())["demonstrator_check"]["verdict"] == "refused"


def test_a_good_demonstrator_passes_quietly(tmp_path, capsys, monkeypatch):
    from aihf.control import collect

    meta = pendulum_dataset(tmp_path / "ok", num_preferences=5)
    assert meta["demonstrator_check"]["verdict"] == "ok"
    monkeypatch.setattr(collect, "collect", lambda config, command="": meta)
    assert cli.main(["collect", "--env_id", ENV, "--output_dir", str(tmp_path / "x")]) == 0
    assert capsys.readouterr().err == ""
    CollectConfig(min_expert_fraction=0.3).validate()
    with pytest.raises(Exception, match="min_expert_fraction=1.5"):
        CollectConfig(min_expert_fraction=1.5).validate()


# ----------------------------------------------------------------------------- balance of the two terms
def _aligned_batch(rng, n=256, length=1):
    """Demonstration states around (1, 0), the policy's around (-1, 0); preferred segments around
    (0, 1), dispreferred around (0, -1): the same state contrast for both terms."""
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    around = lambda x, y, shape: t(rng.normal([x, y], 0.1, size=(*shape, 2)))  # noqa: E731
    return RewardBatch(
        demo_obs=around(1, 0, (n,)),
        sample_obs=around(-1, 0, (n,)),
        chosen_obs=around(0, 1, (n, length)),
        chosen_len=torch.full((n,), length),
        rejected_obs=around(0, -1, (n, length)),
        rejected_len=torch.full((n,), length),
    )


def _norms(seed, length, demo_weight=1.0, pref_weight=1.0):
    torch.manual_seed(seed)
    net = RewardNet(2, 1, hidden=(64, 64), bound=10.0)  # the default reward net and clamp
    _, logs = reward_loss(net, _aligned_batch(np.random.default_rng(seed), length=length), demo_weight, pref_weight,
                          grad_norms=True)  # fmt: skip
    return logs["reward/grad_norm_demo"], logs["reward/grad_norm_pref"]


def test_the_two_terms_start_balanced_as_documented():
    """docs/control.md, "Balance of the two terms": at the start (rewards near 0) the Bradley-Terry
    term's gradient is about L/2 times the ML-IRL term's for the same state contrast, L the segment
    length: within 10x of each other for L up to about 10 (0.5x for aligned single steps), about 25x
    for the collected data's 50-step segments."""
    for seed in range(5):
        for length in (1, 4):
            demo, pref = _norms(seed, length)
            assert 0.1 < pref / demo < 10, (seed, length, demo, pref)
    ratio = lambda n: np.mean([_norms(seed, n)[1] / _norms(seed, n)[0] for seed in range(5)])  # noqa: E731
    assert 0.25 < ratio(1) < 1.0  # ~0.5
    assert 10 < ratio(50) / ratio(1) < 100  # ~L = 50 times the single-step balance: long segments tilt it


def test_the_weights_scale_each_terms_gradient_exactly():
    demo, pref = _norms(0, 5)
    demo2, pref2 = _norms(0, 5, pref_weight=2.0)
    assert demo2 == demo and pref2 == pytest.approx(2 * pref, rel=1e-6)
    demo3, pref3 = _norms(0, 5, demo_weight=0.5)
    assert demo3 == pytest.approx(0.5 * demo, rel=1e-6) and pref3 == pref
    _, logs = reward_loss(RewardNet(2, 1), _aligned_batch(np.random.default_rng(0)), 1.0, 0.0, grad_norms=True)
    assert "reward/grad_norm_pref" not in logs and logs["reward/grad_norm_demo"] > 0


def test_the_loop_logs_both_gradient_norms_each_round(data_dir, tmp_path):
    result = ControlTrainer(_config(data_dir, tmp_path, method="aihf", num_preferences=20)).train()
    for h in result["history"]:
        assert h["reward/grad_norm_demo"] > 0 and h["reward/grad_norm_pref"] > 0


# ----------------------------------------------------------------------------- the long preset
def test_long_preset_lists_one_command_per_run_in_its_own_folders(tmp_path, capsys):
    runs = bench.plan("long")
    # 2 envs x 3 seeds x (1 demo, 0 pairs: ml_irl, bc, 2 null rewards, true_reward; 10 and 100 pairs: aihf,
    # pref_rl, two_stage; low-quality demo: ml_irl and bc at 0 pairs, aihf at 100)
    assert len(runs) == 2 * 3 * (5 + 3 + 3 + 2 + 1)
    assert {r.env_id for r in runs} == {"HalfCheetah-v5", "Hopper-v5"} and {r.seed for r in runs} == {0, 1, 2}
    assert {r.demos[1] for r in runs} == {1} and {r.num_preferences for r in runs} == {0, 10, 100}
    assert {r.method for r in runs} == {"aihf", "pref_rl", "ml_irl", "two_stage", "bc", "null_constant",
                                        "null_untrained", "true_reward"}  # fmt: skip
    assert bench.main(["--preset", "long", "--list", "--data_root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    trains = [line for line in lines if " train " in line]
    assert len(lines) == 2 + len(runs) and len(trains) == len(runs)
    assert all("--preset long" in line and "benchmarks/results/control-long/run_results/" in line for line in trains)
    assert all("--output_dir runs/control-bench-long/" in line for line in trains)
    config = cli.parse_config(ControlConfig, ["--preset", "long"], "t", "")
    assert config.rounds * config.sac_steps_per_round == 300_000 and config.final_eval_episodes == 10
