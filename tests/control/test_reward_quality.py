"""``aihf control bench --reward_quality``: exact scores on hand-made rewards, only the valid steps of a
segment count (a reward cannot win on padding), the run's reward reads back from both formats or is
refused in one line, and the command scores what it should and keeps what it cannot rescore."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from aihf import ConfigError
from aihf.control.reward import RewardNet
from aihf.control.reward_quality import load_run_reward, score_pairs


def test_pair_accuracy_and_rank_correlation_by_hand():
    true_c, true_r = np.array([2.0, 0.0, 1.0, 4.0]), np.array([1.0, 1.0, 2.0, 4.0])  # the last pair ties: left out
    learned_c, learned_r = np.array([3.0, 1.0, 2.0, 5.0]), np.array([1.0, 1.0, 3.0, 0.0])
    # right, a tie (one half), right
    assert score_pairs(learned_c, learned_r, true_c, true_r)["pair_accuracy"] == pytest.approx(2.5 / 3)
    monotone = score_pairs(np.exp(true_c), np.exp(true_r), true_c, true_r)
    assert monotone == {"pair_accuracy": 1.0, "return_spearman": pytest.approx(1.0)}
    assert score_pairs(-true_c, -true_r, true_c, true_r) == {"pair_accuracy": 0.0, "return_spearman": pytest.approx(-1)}
    constant = score_pairs(np.ones(4), np.ones(4), true_c, true_r)
    assert constant == {"pair_accuracy": 0.5, "return_spearman": None}


def _linear_net(obs_dim=3, act_dim=1, weight=(1.0, 0.0, 0.0), bias=0.0):
    """r(s) = 10 tanh((w . s + b) / 10): no hidden layer, inputs not standardised."""
    net = RewardNet(obs_dim, act_dim, hidden=())
    with torch.no_grad():
        net.mlp[0].weight.copy_(torch.tensor([weight]))
        net.mlp[0].bias.fill_(bias)
    return net


def _pairs_file(path, num_pairs=40, length=5, seed=0):
    """Pendulum-v1-shaped pairs whose observation 0 is the true per-step reward (in [0, 1]), observation 1
    noise and observation 2 zero; segments cut to 1..length steps (a fall), padded with zeros as
    ``collect`` writes them."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for side in ("chosen", "rejected"):
        shape = (num_pairs, length)
        obs = np.stack([rng.uniform(0, 1, shape), rng.uniform(-1, 1, shape), np.zeros(shape)], -1)
        lengths = rng.integers(1, length + 1, num_pairs)
        obs[np.arange(length)[None, :] >= lengths[:, None]] = 0.0
        arrays |= {
            f"{side}_observations": obs.astype(np.float32),
            f"{side}_actions": np.zeros((num_pairs, length, 1), np.float32),
            f"{side}_lengths": lengths,
            f"{side}_returns": obs[..., 0].sum(1),
        }
    arrays["probabilities"] = np.full(num_pairs, 0.9)
    np.savez(path, **arrays)
    return arrays


def _run_folder(folder, net, fmt="safetensors", rounds=3, round_=3, buffer=None, **settings):
    """A finished run's folder holding ``net``; ``buffer``: observations for ``checkpoint/buffer.npz``."""
    os.makedirs(folder, exist_ok=True)
    config = {"reward_net_arch": ",".join(str(m.out_features) for m in net.mlp[:-1] if hasattr(m, "out_features"))}
    config |= {"reward_input": "state", "reward_bound": 10.0, "rounds": rounds, "env_id": "Pendulum-v1"}
    config |= {"preferences": "data/Pendulum-v1/preferences.npz", "num_preferences": 10, **settings}
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, os.path.join(folder, "reward.safetensors"))
        with open(os.path.join(folder, "result.json"), "w") as f:
            json.dump({"config": config}, f)
    else:
        os.makedirs(os.path.join(folder, "checkpoint"), exist_ok=True)
        torch.save({"reward": net.state_dict(), "torch_rng": torch.get_rng_state()}, f"{folder}/checkpoint/state.pt")
        with open(os.path.join(folder, "checkpoint", "meta.json"), "w") as f:
            json.dump({"round": round_, "config": config}, f)
    if buffer is not None:  # SB3's layout: (size, n_envs, dim)
        os.makedirs(os.path.join(folder, "checkpoint"), exist_ok=True)
        actions = np.zeros((len(buffer), 1, 1), np.float32)
        np.savez(os.path.join(folder, "checkpoint", "buffer.npz"), observations=buffer[:, None], actions=actions)


@pytest.mark.parametrize("fmt", ["safetensors", "checkpoint"])
def test_the_run_reward_reads_back_from_either_format(tmp_path, fmt):
    net = RewardNet(2, 1, hidden=(8, 8))
    net.set_normalization(np.random.default_rng(0).normal(3, 2, (50, 2)))
    _run_folder(tmp_path / "run", net, fmt)
    loaded = load_run_reward(str(tmp_path / "run"), 2, 1)
    x = torch.randn(7, 2)
    torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


def test_a_run_reward_that_cannot_be_read_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="no reward.safetensors and no checkpoint"):
        load_run_reward(str(tmp_path), 2, 1)
    _run_folder(tmp_path / "unfinished", _linear_net(), "checkpoint", rounds=3, round_=2)
    with pytest.raises(ConfigError, match="round 2 of 3: not finished"):
        load_run_reward(str(tmp_path / "unfinished"), 2, 1)
    _run_folder(tmp_path / "other_size", RewardNet(2, 1, hidden=(8,)), "safetensors")
    with pytest.raises(ConfigError, match=r"reward.safetensors: not a reward of the run's settings .*size mismatch"):
        load_run_reward(str(tmp_path / "other_size"), 3, 1)  # another env's observation size
    _run_folder(tmp_path / "pickled", _linear_net(), "checkpoint")
    torch.save({"reward": {"x": object()}}, tmp_path / "pickled" / "checkpoint" / "state.pt")
    with pytest.raises(ConfigError, match="state.pt: refused to load .it holds pickled objects") as e:
        load_run_reward(str(tmp_path / "pickled"), 2, 1)
    assert "\n" not in str(e.value) and "weights_only" not in str(e.value)
    _run_folder(tmp_path / "input", _linear_net(), reward_input="banana")
    with pytest.raises(ConfigError, match="reward_input must be 'state' or 'state_action', got 'banana'"):
        load_run_reward(str(tmp_path / "input"), 2, 1)
    os.remove(tmp_path / "input" / "result.json")
    with pytest.raises(ConfigError, match="reward.safetensors: no result.json beside it"):
        load_run_reward(str(tmp_path / "input"), 2, 1)


def _bench(argv, capsys, preset="ci"):
    from aihf.cli import main

    code = main(["control", "bench", "--preset", preset, "--reward_quality", *argv])
    out = capsys.readouterr()
    return code, out.out.strip(), out.err.strip()


def _finished(results, work, runs: dict, **settings):
    """Run folders and result files of the ci preset's runs ``{name: net}`` (Pendulum-v1)."""
    for name, net in runs.items():
        _run_folder(work / "Pendulum-v1" / name, net, **settings)
        (results / "run_results" / "Pendulum-v1").mkdir(parents=True, exist_ok=True)
        (results / "run_results" / "Pendulum-v1" / f"{name}.json").write_text("{}")


@pytest.fixture
def bench_dirs(tmp_path):
    data, results, work = tmp_path / "data", tmp_path / "results", tmp_path / "work"
    (data / "Pendulum-v1").mkdir(parents=True)
    pairs = _pairs_file(data / "Pendulum-v1" / "preferences.npz")
    return pairs, data, results, work, ["--data_root", str(data), "--results", str(results), "--work", str(work)]


def test_bench_scores_the_learned_rewards_on_pairs_no_run_trained_on(bench_dirs, capsys):
    pairs, data, results, work, argv = bench_dirs
    held = slice(10, None)  # the ci preset's runs train on up to 10 pairs
    _finished(results, work, {
        "expert1_p10__aihf__seed0": _linear_net(),  # the per-step content
        "expert1_p0__ml_irl__seed0": _linear_net(weight=(-1.0, 0.0, 0.0)),  # its opposite
        "expert1_p10__pref_rl__seed0": _linear_net(weight=(0.0, 0.0, 0.0), bias=1.0),  # one per valid step: length
        "expert1_p0__null_constant__seed0": _linear_net(),  # its net is unused: not scored
    })
    _run_folder(work / "Pendulum-v1" / "expert1_p10__two_stage__seed0", _linear_net())  # no result file: not finished
    code, out, err = _bench(argv, capsys)
    assert code == 0, err
    assert out.startswith("scored 3 runs' rewards; wrote")
    report = json.loads((results / "reward_quality.json").read_text())
    env = report["envs"]["Pendulum-v1"]
    assert report["held_out_from"] == 10 and env["held_out_pairs"] == 30
    scored = ["expert1_p0__ml_irl__seed0", "expert1_p10__aihf__seed0", "expert1_p10__pref_rl__seed0"]
    assert sorted(env["runs"]) == scored
    assert env["runs"]["expert1_p10__aihf__seed0"]["pair_accuracy"] >= 0.95
    assert env["runs"]["expert1_p0__ml_irl__seed0"]["pair_accuracy"] <= 0.05
    # Only valid steps count: the constant reward scores exactly as the lengths do.
    length_only = score_pairs(
        pairs["chosen_lengths"][held] * 1.0, pairs["rejected_lengths"][held] * 1.0,
        pairs["chosen_returns"][held], pairs["rejected_returns"][held],
    )
    by_length = {k: v for k, v in env["runs"]["expert1_p10__pref_rl__seed0"].items() if k in length_only}
    assert by_length == pytest.approx(length_only, abs=1e-6)
    assert env["references"]["length only"] == pytest.approx(length_only)
    true_order = (pairs["chosen_returns"][held] > pairs["rejected_returns"][held]).mean()
    assert env["references"]["labels"]["pair_accuracy"] == pytest.approx(true_order)
    # Random observations: no held-out step repeats a training one, so every pair is disjoint.
    assert env["overlap"] == {"held_out_segments_sharing_a_step_with_training": 0.0, "disjoint_pairs": 30}
    assert env["runs"]["expert1_p10__aihf__seed0"]["disjoint_pair_accuracy"] == env["runs"][
        "expert1_p10__aihf__seed0"]["pair_accuracy"]
    table = (results / "reward_quality.md").read_text()
    accuracy = env["runs"]["expert1_p10__aihf__seed0"]["pair_accuracy"]
    assert f"| expert1_p10 | aihf | {accuracy:.2f} ± 0.00 (1) |" in table

    # A filtered call rescores its runs and keeps the others' rows.
    code, out, _ = _bench([*argv, "--only", "__aihf__"], capsys)
    assert code == 0 and out.startswith("scored 1 runs' rewards")
    assert sorted(json.loads((results / "reward_quality.json").read_text())["envs"]["Pendulum-v1"]["runs"]) == scored
    # A run folder gone: its row stays while the preference file is the same one.
    import shutil

    shutil.rmtree(work / "Pendulum-v1" / "expert1_p10__aihf__seed0")
    code, out, _ = _bench(argv, capsys)
    assert code == 0 and out.startswith("scored 2 runs' rewards; wrote")
    scores = lambda runs: {name: {k: v for k, v in row.items() if k != "command"} for name, row in runs.items()}
    assert scores(json.loads((results / "reward_quality.json").read_text())["envs"]["Pendulum-v1"]["runs"]) == scores(
        env["runs"])
    _pairs_file(data / "Pendulum-v1" / "preferences.npz", seed=1)  # other data: the kept row no longer applies
    code, out, _ = _bench(argv, capsys)
    assert code == 0 and "1 finished runs have no folder under" in out
    assert "expert1_p10__aihf__seed0" not in json.loads((results / "reward_quality.json").read_text())["envs"][
        "Pendulum-v1"]["runs"]


def test_the_reward_as_sac_saw_it_adds_the_shift_of_the_final_buffer(bench_dirs, capsys):
    pairs, _, results, work, argv = bench_dirs
    buffer = np.array([[0.2, 0.5, 0.0], [0.9, -1.0, 0.0], [0.5, 0.0, 0.0]], np.float32)
    net = _linear_net(weight=(-1.0, 0.0, 0.0), bias=2.0)  # r(s) ~ 2 - s0: its minimum over the buffer is at 0.9
    _finished(results, work, {"expert1_p0__ml_irl__seed0": net}, buffer=buffer)
    assert _bench(argv, capsys)[0] == 0
    row = json.loads((results / "reward_quality.json").read_text())["envs"]["Pendulum-v1"]["runs"][
        "expert1_p0__ml_irl__seed0"]
    offset = -float(net(torch.as_tensor(buffer)).min().detach())
    assert row["sac_offset"] == pytest.approx(offset)
    held = slice(10, None)
    with torch.no_grad():
        per_step = {s: net(torch.as_tensor(pairs[f"{s}_observations"][held])).double().numpy() + offset
                    for s in ("chosen", "rejected")}
    mask = {s: np.arange(5)[None] < pairs[f"{s}_lengths"][held][:, None] for s in ("chosen", "rejected")}
    shifted = score_pairs(*((per_step[s] * mask[s]).sum(1) for s in ("chosen", "rejected")),
                          pairs["chosen_returns"][held], pairs["rejected_returns"][held])
    assert row["sac_pair_accuracy"] == pytest.approx(shifted["pair_accuracy"])
    assert row["sac_return_spearman"] == pytest.approx(shifted["return_spearman"])
    # The shift pays each step alive: on these segments (1-5 steps) it moves the order towards length.
    assert row["sac_pair_accuracy"] != row["pair_accuracy"]


def test_overlap_with_training_segments_is_counted_and_left_out(tmp_path, capsys):
    data, results, work = tmp_path / "data", tmp_path / "results", tmp_path / "work"
    (data / "Pendulum-v1").mkdir(parents=True)
    pairs = _pairs_file(data / "Pendulum-v1" / "preferences.npz")
    # Held-out pairs 10..14 reuse a training segment on their chosen side.
    for key in ("observations", "actions", "lengths", "returns"):
        pairs[f"chosen_{key}"][10:15] = pairs[f"chosen_{key}"][0:5]
    np.savez(data / "Pendulum-v1" / "preferences.npz", **pairs)
    _finished(results, work, {"expert1_p10__aihf__seed0": _linear_net()})
    assert _bench(["--data_root", str(data), "--results", str(results), "--work", str(work)], capsys)[0] == 0
    env = json.loads((results / "reward_quality.json").read_text())["envs"]["Pendulum-v1"]
    assert env["overlap"] == {"held_out_segments_sharing_a_step_with_training": 5 / 60, "disjoint_pairs": 25}


def test_bench_reward_quality_refuses_bad_input_in_one_line(bench_dirs, capsys):
    pairs, data, results, work, argv = bench_dirs

    def refused(*extra, preset="ci"):
        code, _, err = _bench([*argv, *extra], capsys, preset)
        assert code == 2 and len(err.splitlines()) == 1, err
        return err

    assert "no finished run's result file under run_results/ among the selected runs" in refused()  # --results typo?
    assert not results.exists()
    _finished(results, work, {"expert1_p0__bc__seed0": _linear_net()})
    assert "none of the selected finished runs has a learned reward" in refused()
    _finished(results, work, {"expert1_p10__pref_rl__seed0": _linear_net()}, num_preferences=50)
    assert "trained on the first 50 pairs, but only pairs from index 10 on are held out" in refused()
    _finished(results, work, {"expert1_p10__pref_rl__seed0": _linear_net()}, env_id="Hopper-v5")
    assert "a run of 'Hopper-v5', not of Pendulum-v1" in refused()
    _finished(results, work, {"expert1_p10__pref_rl__seed0": _linear_net(bias=float("nan"))})
    assert "reward.safetensors: the reward is not finite on the held-out segments" in refused()
    _finished(results, work, {"expert1_p10__pref_rl__seed0": _linear_net()}, preferences="other/preferences.npz")
    assert "trained on the pairs of 'other/preferences.npz', not on Pendulum-v1/preferences.npz" in refused()
    _finished(results, work, {"expert1_p10__pref_rl__seed0": _linear_net()}, buffer=np.full((3, 3), np.nan, np.float32))
    assert "checkpoint/buffer.npz: cannot give the final shift of SAC's reward" in refused()
    os.remove(work / "Pendulum-v1" / "expert1_p10__pref_rl__seed0" / "checkpoint" / "buffer.npz")
    assert "has its folder under --work (a typo?)" in refused("--work", str(work / "typo"))
    assert "argument --reward_quality: not allowed with --report" in refused("--report")
    assert "argument --envs: comma-separated env ids" in refused("--envs", ",")
    assert not (results / "reward_quality.json").exists()

    few = {k: v[:10] for k, v in pairs.items()}
    np.savez(data / "Pendulum-v1" / "preferences.npz", **few)
    assert "preferences.npz: 10 pairs; the runs train on up to the first 10" in refused()
    del few["rejected_returns"]
    np.savez(data / "Pendulum-v1" / "preferences.npz", **few)
    assert "field 'rejected_returns': missing" in refused()
    (data / "Pendulum-v1" / "preferences.npz").write_bytes(b"PK\x03\x04 truncated")
    assert "preferences.npz: not a readable .npz file" in refused()
    np.savez(data / "Pendulum-v1" / "preferences.npz", **{**pairs, "chosen_returns": pairs["chosen_returns"] * np.nan})
    assert "field 'chosen_returns': contains NaN or infinity" in refused()
    np.savez(data / "Pendulum-v1" / "preferences.npz", **pairs)
    (results / "reward_quality.json").write_text('{"envs": {"Pendulum-v1": []}}')
    assert "reward_quality.json: not a reward-quality report" in refused()
    assert (results / "reward_quality.json").read_text() == '{"envs": {"Pendulum-v1": []}}'  # left as it was
    os.remove(results / "reward_quality.json")
    assert _bench(argv, capsys)[0] == 0
    good = (results / "reward_quality.json").read_text()
    (results / "reward_quality.json").write_text(good.replace('"pair_accuracy": 1.0', '"pair_accuracy": NaN', 1))
    assert "a score that is not a finite number or null" in refused()
    (results / "reward_quality.json").write_text(good)
    other_preset = refused("--envs", "Pendulum-v1", preset="cpu")
    assert "written for pairs from index 10 on, this preset holds out from 100" in other_preset


def test_true_returns_that_all_tie_leave_accuracy_undefined_not_nan(bench_dirs, capsys):
    pairs, data, results, work, argv = bench_dirs
    np.savez(data / "Pendulum-v1" / "preferences.npz", **{**pairs, "rejected_returns": pairs["chosen_returns"]})
    _finished(results, work, {"expert1_p10__aihf__seed0": _linear_net()})
    assert _bench(argv, capsys)[0] == 0
    text = (results / "reward_quality.json").read_text()
    assert "NaN" not in text and json.loads(text)["envs"]["Pendulum-v1"]["runs"]["expert1_p10__aihf__seed0"][
        "pair_accuracy"] is None
    assert "| expert1_p10 | aihf | – |" in (results / "reward_quality.md").read_text()
