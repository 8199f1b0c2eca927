"""``aihf control bench --segments``: the scores it reports are what they say (exact values on
hand-made rewards), a reward fitted on the pairs learns the per-step content rather than the
episodes' lengths, and the command writes its report or refuses a missing pool in one line."""

import json

import numpy as np
import pytest

from aihf.control import bench
from aihf.control.data import Trajectories, label_preferences, save_trajectories
from aihf.control.segments import eval_windows, fit_preference_reward, score_reward, segment_study, split_pool


@pytest.fixture(autouse=True)
def one_thread():
    # Fits of a few hundred small steps: more threads than free cores collapse on a busy machine.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pool(num_episodes=24, seed=0, lengths=None):
    """Episodes of a quality q in [-1, 1]: observation 0 is q plus noise and is the per-step reward;
    observation 1 is noise. With ``lengths`` the episodes' lengths (else 40 each)."""
    rng = np.random.default_rng(seed)
    lengths = lengths if lengths is not None else [40] * num_episodes
    quality = np.linspace(-1, 1, len(lengths))
    obs = np.concatenate(
        [np.stack([q + 0.5 * rng.standard_normal(n), rng.standard_normal(n)], 1) for q, n in zip(quality, lengths)]
    ).astype(np.float32)
    return Trajectories(obs, np.zeros((len(obs), 1), np.float32), np.array(lengths), obs[:, 0].copy())


def test_scores_of_the_true_reward_and_of_a_constant_are_exact():
    held_out = split_pool(_pool())[1]
    windows = eval_windows(held_out, 200, np.random.default_rng(0))
    assert windows.shape == (200, 2, 2) and (windows[:, :, 1] - windows[:, :, 0] == 40).all()
    true = score_reward(held_out.rewards.astype(np.float64), held_out, windows)
    assert true == {"step_spearman": pytest.approx(1.0), "return_spearman": pytest.approx(1.0), "pair_accuracy": 1.0}
    negated = score_reward(-held_out.rewards.astype(np.float64), held_out, windows)
    assert negated["step_spearman"] == pytest.approx(-1.0) and negated["pair_accuracy"] == 0.0
    # A constant ties every equal-length pair: a coin flip each, and no ranking at all.
    constant = score_reward(np.ones(len(held_out.rewards)), held_out, windows)
    assert constant["pair_accuracy"] == 0.5 and constant["step_spearman"] is None  # undefined; JSON has no NaN


def test_windows_stay_inside_their_episodes():
    pool = _pool(lengths=[5, 70, 12, 60, 33, 8])
    windows = eval_windows(pool, 300, np.random.default_rng(1))
    ends = np.cumsum(pool.episode_lengths)
    for begin, end in windows.reshape(-1, 2):
        episode = np.searchsorted(ends, begin, side="right")
        assert end <= ends[episode] and end - begin == min(50, pool.episode_lengths[episode])


@pytest.mark.learning
def test_a_reward_fitted_on_pairs_learns_the_per_step_content():
    # Whole episodes of unequal length, where a longer episode has the higher return: a reward that
    # counted steps would rank episodes, but only the content (observation 0) ranks steps.
    lengths = [20 + 2 * k for k in range(24)]
    pool = _pool(lengths=lengths)
    train, held_out = split_pool(pool)
    prefs, _ = label_preferences(train, 100, 10, np.random.default_rng(0), aligned=True)
    net = fit_preference_reward(prefs, steps=300, seed=0)
    import torch

    with torch.no_grad():
        r = net(torch.as_tensor(held_out.observations)).numpy().astype(np.float64)
    scores = score_reward(r, held_out, eval_windows(held_out, 300, np.random.default_rng(0)))
    assert scores["step_spearman"] > 0.7  # 0.94-0.99 over seeds 0-3; the noise dimension 1 carries nothing
    assert scores["pair_accuracy"] > 0.8
    # A net fitted on shuffled labels learns nothing of the sort (the test could fail).
    flipped = label_preferences(train, 100, 10, np.random.default_rng(0), aligned=True)[0]
    rng = np.random.default_rng(2)
    swap = rng.random(100) < 0.5
    for key in ("observations", "actions", "lengths"):
        c, rj = getattr(flipped, f"chosen_{key}").copy(), getattr(flipped, f"rejected_{key}").copy()
        getattr(flipped, f"chosen_{key}")[swap], getattr(flipped, f"rejected_{key}")[swap] = rj[swap], c[swap]
    net = fit_preference_reward(flipped, steps=300, seed=0)
    with torch.no_grad():
        r = net(torch.as_tensor(held_out.observations)).numpy().astype(np.float64)
    shuffled = score_reward(r, held_out, eval_windows(held_out, 300, np.random.default_rng(0)))
    assert abs(shuffled["step_spearman"]) < 0.5  # |0.00-0.10| over seeds 0-3


def test_the_study_reports_every_design_and_the_length_only_reference():
    pool = _pool(lengths=[30 + k for k in range(16)])
    out = segment_study(pool, num_pairs=40, steps=30, seeds=(0, 1), eval_pairs=100, progress=False)
    assert list(out["designs"]) == [
        "independent 1", "aligned 1", "independent 10", "aligned 10", "independent 50 (default)", "aligned 50",
        "whole episodes",
    ]
    assert out["designs"]["whole episodes"]["segment_length"] == 45  # the longest episode
    assert all(len(d["step_spearman"]) == 2 for d in out["designs"].values())
    # Return rises with length here, so the constant reward ranks episodes perfectly, steps not at all.
    assert out["length_only"]["return_spearman"] == [pytest.approx(1.0)]
    assert out["train_episodes"] == out["held_out_episodes"] == 8


def test_bench_segments_writes_its_report_one_env_at_a_time(tmp_path, capsys):
    data = tmp_path / "data" / "Pendulum-v1"
    data.mkdir(parents=True)
    save_trajectories(str(data / "pool.npz"), _pool(num_episodes=8))
    argv = ["--envs", "Pendulum-v1", "--segments", "--seeds", "0", "--segment_reward_steps", "20"]
    argv += ["--data_root", str(tmp_path / "data")]
    assert bench.main([*argv, "--results", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "segments.json").read_text())["envs"]["Pendulum-v1"]
    assert result["command"].startswith("aihf control bench --envs Pendulum-v1 --segments")
    assert result["seeds"] == [0] and result["reward_steps"] == 20
    md = (tmp_path / "out" / "segments.md").read_text()
    assert "| constant reward (length only) |" in md and "| aligned 50 |" in md
    assert (tmp_path / "out" / "segments.png").stat().st_size > 10_000
    # A second env joins the same report; the first, same seeds and steps, is kept rather than rerun.
    other = tmp_path / "data" / "Other-v0"
    other.mkdir()
    save_trajectories(str(other / "pool.npz"), _pool(num_episodes=8, seed=1))
    argv[argv.index("Pendulum-v1")] = "Pendulum-v1,Other-v0"
    assert bench.main([*argv, "--results", str(tmp_path / "out")]) == 0
    assert "Pendulum-v1: kept from" in capsys.readouterr().out
    assert result["pool_sha256"] and "NaN" not in (tmp_path / "out" / "segments.json").read_text()
    both = json.loads((tmp_path / "out" / "segments.json").read_text())["envs"]
    assert list(both) == ["Pendulum-v1", "Other-v0"] and both["Pendulum-v1"] == result
    assert "## Other-v0" in (tmp_path / "out" / "segments.md").read_text()


def test_bench_segments_without_a_pool_says_so_in_one_line(tmp_path, capsys):
    from aihf.cli import main

    argv = ["--segments", "--envs", "Hopper-v5", "--data_root", str(tmp_path), "--results", str(tmp_path / "out")]
    code = main(["control", "bench", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "Hopper-v5/pool.npz: missing" in err and "--data_root" in err
    assert not (tmp_path / "out").exists()


def _bench_error(tmp_path, capsys, pool=None, extra=(), results=None):
    from aihf.cli import main

    if pool is not None:
        (tmp_path / "data" / "EnvA").mkdir(parents=True, exist_ok=True)
        save_trajectories(str(tmp_path / "data" / "EnvA" / "pool.npz"), pool)
    results = results or tmp_path / "out"
    argv = ["--segments", "--envs", "EnvA", "--segment_reward_steps", "5", "--seeds", "0"]
    code = main(["control", "bench", *argv, "--data_root", str(tmp_path / "data"), "--results", str(results), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_bench_segments_refuses_what_it_cannot_study_before_any_fit(tmp_path, capsys):
    err = _bench_error(tmp_path, capsys, _pool(num_episodes=3))
    assert "EnvA/pool.npz, field 'episode_lengths': 3 episode(s); the study needs >= 4" in err
    flat = _pool(num_episodes=6)
    flat.rewards[:] = 0.0  # every window ties: nothing to rank (was an endless loop)
    assert "EnvA/pool.npz, field 'rewards':" in _bench_error(tmp_path, capsys, flat)
    assert not (tmp_path / "out").exists()
    for seeds in ("-1", "0,0"):
        assert "argument --seeds" in _bench_error(tmp_path, capsys, extra=["--seeds", seeds])


def test_bench_segments_checks_its_results_folder_first(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    err = _bench_error(tmp_path, capsys, _pool(num_episodes=6), results=tmp_path / "afile")
    assert "cannot write there" in err and (tmp_path / "afile").read_text() == "x"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "segments.json").write_text('{"envs": {')
    assert "segments.json: not a segments report" in _bench_error(tmp_path, capsys)
    assert (tmp_path / "out" / "segments.json").read_text() == '{"envs": {'  # left as it was
