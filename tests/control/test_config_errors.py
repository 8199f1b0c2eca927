"""Bad settings of every ``aihf control`` command (collect, train, eval, bench) are refused at
start-up: one line on stderr naming the setting, exit status 2, nothing written (the output
folder is not created, the working directory and the data folder are untouched)."""

import os

import numpy as np
import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

from aihf.control import cli  # noqa: E402

from .helpers import ENV, pendulum_dataset  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    pendulum_dataset(folder, num_preferences=20)  # 2 demonstration episodes, 20 pairs
    np.save(folder / "observations.npy", np.zeros((4, 3)))  # a bare array, not a .npz of named arrays
    return folder


def _snapshot(folder) -> dict:
    return {p: os.stat(os.path.join(folder, p)).st_mtime_ns for p in sorted(os.listdir(folder))}


def _user_error(tmp_path, monkeypatch, capsys, data, argv):
    """Run ``aihf control <argv>`` (DATA in argv: the data folder) from an empty folder; it must
    fail as a user error. Returns the one stderr line."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "out"
    argv = [a.replace("DATA", str(data)) for a in argv]
    if argv[0] in ("collect", "train") and "--output_dir" not in argv:
        argv += ["--output_dir", str(out)]
    if argv[0] == "bench":
        argv += ["--results", str(out), "--work", str(out / "work"), "--data_root", str(data.parent)]
    before = _snapshot(data)
    capsys.readouterr()
    status = cli.main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, (status, captured.err[-2000:])
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert not out.exists() and os.listdir(work) == [], "something was written"
    assert _snapshot(data) == before
    return lines[0]


DEMOS = ["--env_id", ENV, "--demonstrations", "DATA/demos.npz"]
PREFS = ["--preferences", "DATA/preferences.npz"]

TRAIN_CASES = [
    # unknown keys, wrong types, bad choices
    (["--nonsense", "1"], "unknown option --nonsense"),
    (["--rounds", "x"], "argument --rounds: invalid int value: 'x'"),
    (["--rounds", "1.5"], "argument --rounds: invalid int value: '1.5'"),
    (["--gamma", "high"], "argument --gamma: invalid float value: 'high'"),
    (["--method", "ppo"], "argument --method: invalid choice: 'ppo'"),
    (["--reward_input", "action"], "argument --reward_input: invalid choice: 'action'"),
    (["--progress", "maybe"], "argument --progress: expected true or false, got 'maybe'"),
    (["--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
    # impossible combinations
    ([*PREFS, "--demo_weight", "0", "--pref_weight", "0"], "demo_weight and pref_weight are both 0"),
    (["--demo_weight", "0"], "method=aihf (from the flags) has no data to learn a reward from"),
    (["--method", "ml_irl", "--demo_weight", "0"], "demo_weight=0.0 (from the flags) must be > 0 for method=ml_irl"),
    ([*PREFS, "--method", "two_stage", "--demo_weight", "0"], "demo_weight=0.0 (from the flags) must be > 0 for"),
    (["--method", "pref_rl"], "preferences (from the flags) are required for method=pref_rl"),
    (["--method", "two_stage"], "preferences (from the flags) are required for method=two_stage"),
    ([*PREFS, "--method", "pref_rl", "--num_preferences", "0"],
     "num_preferences=0 (from the flags) leaves method=pref_rl no pairs to learn from: give at least 1"),
    ([*PREFS, "--method", "two_stage", "--num_preferences", "0"], "leaves method=two_stage no pairs to learn from"),
    (["--num_demonstrations", "3"], "num_demonstrations=3 (from the flags) must be between 1 and the 2 episodes"),
    (["--num_demonstrations", "0"], "num_demonstrations=0 (from the flags) must be >= 1"),
    ([*PREFS, "--num_preferences", "21"], "num_preferences=21 (from the flags) exceeds the 20 pairs"),
    ([*PREFS, "--num_preferences", "-1"], "num_preferences=-1 (from the flags) must be >= 0"),
    (["--batch_size", "512", "--buffer_size", "100"], "batch_size=512 exceeds buffer_size=100"),
    (["--method", "bc", "--bc_steps", "0"], "bc_steps=0 (from the flags) must be >= 1 for method=bc"),
    # out-of-range numbers
    (["--rounds", "0"], "rounds=0 (from the flags) must be >= 1"),
    (["--sac_steps_per_round", "0"], "sac_steps_per_round=0 (from the flags) must be >= 1"),
    (["--sac_steps_per_round", "-5"], "sac_steps_per_round=-5 (from the flags) must be >= 1"),
    (["--buffer_size", "0"], "buffer_size=0 (from the flags) must be >= 1"),
    (["--batch_size", "0"], "batch_size=0 (from the flags) must be >= 1"),
    (["--train_freq", "0"], "train_freq=0 (from the flags) must be >= 1"),
    (["--learning_starts", "-1"], "learning_starts=-1 (from the flags) must be >= 0"),
    (["--reward_steps_per_round", "-1"], "reward_steps_per_round=-1 (from the flags) must be >= 0"),
    (["--reward_batch_size", "0"], "reward_batch_size=0 (from the flags) must be >= 1"),
    (["--policy_sample_steps", "0"], "policy_sample_steps=0 (from the flags) must be >= 1"),
    (["--eval_every", "0"], "eval_every=0 (from the flags) must be >= 1"),
    (["--eval_episodes", "0"], "eval_episodes=0 (from the flags) must be >= 1"),
    (["--torch_threads", "0"], "torch_threads=0 (from the flags) must be >= 1"),
    (["--seed", "-1"], "seed=-1 (from the flags) must be in [0, 2**32 - 1]"),
    (["--seed", str(2**32)], "must be in [0, 2**32 - 1]"),
    (["--gamma", "1.5"], "gamma=1.5 (from the flags) must be in [0, 1]"),
    (["--gamma", "nan"], "gamma=nan (from the flags) must be a finite number"),
    (["--tau", "0"], "tau=0.0 (from the flags) must be in (0, 1]"),
    (["--sac_learning_rate", "-1"], "sac_learning_rate=-1.0 (from the flags) must be > 0"),
    (["--reward_learning_rate", "0"], "reward_learning_rate=0.0 (from the flags) must be > 0"),
    (["--bc_learning_rate", "inf"], "bc_learning_rate=inf (from the flags) must be a finite number"),
    (["--demo_weight", "-1"], "demo_weight=-1.0 (from the flags) must be >= 0"),
    (["--pref_weight", "nan"], "pref_weight=nan (from the flags) must be a finite number"),
    (["--reward_bound", "0"], "reward_bound=0.0 (from the flags) must be > 0"),
    (["--sac_reward_scale", "-2"], "sac_reward_scale=-2.0 (from the flags) must be > 0"),
    (["--output_dir", ""], "output_dir='' (from the flags) must be a folder path"),
    # nets
    (["--net_arch", "64,x"], "net_arch='64,x' (from the flags) must be positive integers like 64,64"),
    (["--net_arch", "[64, 64]"], "net_arch='[64, 64]'"),
    (["--net_arch", "0"], "net_arch='0'"),
    (["--net_arch", ""], "net_arch=''"),
    (["--reward_net_arch", "-1"], "reward_net_arch='-1'"),
    # envs and files
    (["--env_id", "NoSuchEnv-v0"], "env_id='NoSuchEnv-v0': Environment `NoSuchEnv` doesn't exist."),
    (["--env_id", "no_such_module:Env-v0"], "env_id='no_such_module:Env-v0': No module named 'no_such_module'"),
    (["--env_id", ""], "env_id='' (from the flags) must be a Gymnasium id"),
    (["--env_id", "CartPole-v1"], "env_id='CartPole-v1': needs Box observation and action spaces"),
    (["--env_id", "MountainCarContinuous-v0"], "field 'observations': last dimension is 3 but the env's space has 2"),
    (["--demonstrations", "DATA/missing.npz"], "missing.npz: no such file"),
    (["--demonstrations", "DATA/a\rb.npz"], "a\\rb.npz: no such file"),  # one line, whatever the name
    (["--demonstrations", "DATA/meta.json"], "meta.json: not a readable .npz file"),
    (["--reference_returns", "DATA/missing.json"], "reference_returns="),
    (["--demonstrations", "DATA"], " is a folder, not a .npz file"),
    (["--demonstrations", "DATA/observations.npy"], "observations.npy: a single .npy array, not a .npz file"),
    (["--demonstrations", ""], "demonstrations='' (from the flags) must be a file path"),
    (["--demonstrations", "DATA/preferences.npz"], "'observations': missing: this is a preference-pair file"),
    (["--preferences", "DATA/demos.npz"], "'chosen_observations': missing: this is a trajectory file"),
    (["--output_dir", "DATA/demos.npz"], "demos.npz' (from the flags) is a file, not a folder"),
    (["--result_file", "DATA"], "(from the flags) is a folder, not a file path"),
]


@pytest.mark.parametrize("flags, expected", TRAIN_CASES, ids=[" ".join(f) or "empty" for f, _ in TRAIN_CASES])
def test_train_config_errors_are_one_line(tmp_path, monkeypatch, capsys, data, flags, expected):
    line = _user_error(tmp_path, monkeypatch, capsys, data, ["train", *DEMOS, *flags])
    assert line.startswith("aihf control train: ") and expected in line, line


COLLECT_CASES = [
    (["--nonsense", "1"], "unknown option --nonsense"),
    (["--batch_size", "x"], "argument --batch_size: invalid int value: 'x'"),
    (["--expert_steps", "0"], "expert_steps=0 (from the flags) must be >= 1"),
    (["--snapshots", "0"], "snapshots=0 (from the flags) must be >= 1"),
    (["--snapshots", "20", "--expert_steps", "10"], "snapshots=20 exceeds expert_steps=10"),
    (["--segment_length", "0"], "segment_length=0 (from the flags) must be >= 1"),
    (["--num_preferences", "0"], "num_preferences=0 (from the flags) must be >= 1"),
    (["--label_noise", "2"], "label_noise=2.0 (from the flags) must be between 0 and 1"),
    (["--temperature_scale", "nan"], "temperature_scale=nan (from the flags) must be a finite number"),
    (["--temperature_scale", "0"], "temperature_scale=0.0 (from the flags) must be > 0"),
    (["--net_arch", "x"], "net_arch='x' (from the flags) must be positive integers like 64,64"),
    (["--seed", "-1"], "seed=-1 (from the flags) must be in [0, 2**32 - 1]"),
    (["--torch_threads", "0"], "torch_threads=0 (from the flags) must be >= 1"),
    (["--output_dir", ""], "output_dir='' (from the flags) must be a folder path"),
    (["--env_id", "NoSuchEnv-v0"], "env_id='NoSuchEnv-v0': Environment `NoSuchEnv` doesn't exist."),
    (["--env_id", "CartPole-v1"], "env_id='CartPole-v1': needs Box observation and action spaces"),
    (["--output_dir", "DATA/demos.npz"], "demos.npz' (from the flags) is a file, not a folder"),
]


@pytest.mark.parametrize("flags, expected", COLLECT_CASES, ids=[" ".join(f) for f, _ in COLLECT_CASES])
def test_collect_config_errors_are_one_line(tmp_path, monkeypatch, capsys, data, flags, expected):
    line = _user_error(tmp_path, monkeypatch, capsys, data, ["collect", "--env_id", ENV, *flags])
    assert line.startswith("aihf control collect: ") and expected in line, line


OTHER_CASES = [
    (["eval"], "aihf control eval: the following arguments are required: --run_dir"),
    (["eval", "--run_dir", "DATA"], "aihf control eval: run_dir="),
    (["eval", "--run_dir", "DATA", "--episodes", "0"], "argument --episodes: must be >= 1, got 0"),
    (["eval", "--run_dir", "DATA", "--seed", "-1"], "argument --seed: must be in [0, 2**32 - 1], got -1"),
    (["bench", "--jobs", "0"], "aihf control bench: argument --jobs: must be >= 1, got 0"),
    (["bench", "--preset", "huge"], "aihf control bench: argument --preset: invalid choice: 'huge'"),
    (["bench", "--nonsense"], "aihf control bench: unknown option --nonsense"),
    (["bench", "--preset", "ci", "--train_flags", "--rounds 0"], "rounds=0 (from the flags of run Pendulum-v1/"),
    (["bench", "--preset", "ci", "--train_flags", "--bogus 1"], "aihf control bench: unknown option --bogus"),
    (["bench", "--preset", "ci", "--report"], "no result files under"),  # nothing to report: no empty table
    (["bench", "--seeds", "x"], "aihf control bench: argument --seeds: distinct comma-separated integers >= 0, e.g."),
    (["bench", "--seeds", ","], "argument --seeds: distinct comma-separated integers >= 0, e.g. 0,1,2, got ','"),
    (["bench", "--seeds", "0,-1"], "argument --seeds: distinct comma-separated integers >= 0, e.g. 0,1,2, got '0,-1'"),
    (["bench", "--seeds", "1,1"], "argument --seeds: distinct comma-separated integers >= 0, e.g. 0,1,2, got '1,1'"),
    (["bench", "--segments", "--only", "aihf"], "argument --only: selects benchmark runs; --segments fits rewards"),
    # A typo in --only ran nothing and exited 0.
    (["bench", "--preset", "ci", "--only", "__true_rewards__"], "argument --only: '__true_rewards__' matches no run"),
]


@pytest.mark.parametrize("argv, expected", OTHER_CASES, ids=[" ".join(a) for a, _ in OTHER_CASES])
def test_eval_and_bench_config_errors_are_one_line(tmp_path, monkeypatch, capsys, data, argv, expected):
    line = _user_error(tmp_path, monkeypatch, capsys, data, argv)
    assert expected in line, line


RESULT_CASES = [
    ({"bogus": 1}, "bogus=1 (from RUN/result.json) is not a setting of ControlConfig"),
    ({"rounds": "x"}, "rounds='x' (from RUN/result.json) must be of type int"),
    ({"seed": None}, "seed=None (from RUN/result.json) must be of type int"),
    ({"progress": 1}, "progress=1 (from RUN/result.json) must be of type bool"),
    ({"gamma": [0.9]}, "gamma=[0.9] (from RUN/result.json) must be of type float"),
    ({"rounds": 0}, "rounds=0 (from RUN/result.json) must be >= 1"),
    ([1, 2], "RUN/result.json: 'config' must be a mapping of settings, got list"),
    ({}, "run_dir='RUN': no policy.safetensors beside result.json"),  # a sound result, its policy gone
]


@pytest.mark.parametrize("config, expected", RESULT_CASES, ids=[str(c) for c, _ in RESULT_CASES])
def test_eval_refuses_a_tampered_result_file_in_one_line(tmp_path, monkeypatch, capsys, data, config, expected):
    import dataclasses
    import json

    from aihf.control.config import ControlConfig

    run = tmp_path / "run"
    run.mkdir()
    good = ControlConfig(env_id=ENV, demonstrations=str(data / "demos.npz"))
    saved = {**dataclasses.asdict(good), **config} if isinstance(config, dict) else config
    (run / "result.json").write_text(json.dumps({"config": saved}))
    line = _user_error(tmp_path, monkeypatch, capsys, data, ["eval", "--run_dir", str(run)])
    assert line == f"aihf control eval: {expected.replace('RUN', str(run))}", line


def test_eval_refuses_a_policy_file_it_cannot_load_in_one_line(tmp_path, monkeypatch, capsys, data):
    import dataclasses
    import json

    from aihf.control.config import ControlConfig

    run = tmp_path / "run"
    run.mkdir()
    config = dataclasses.asdict(ControlConfig(env_id=ENV, demonstrations=str(data / "demos.npz"), method="bc"))
    (run / "result.json").write_text(json.dumps({"config": config}))
    (run / "policy.safetensors").write_bytes(b"\x00" * 5)  # truncated
    line = _user_error(tmp_path, monkeypatch, capsys, data, ["eval", "--run_dir", str(run)])
    expected = f"aihf control eval: {run}/policy.safetensors: not the policy of this run's settings ("
    assert line.startswith(expected), line
