"""``aihf control bench --speed_backends``: the variants it parses, the update schedule it keeps and
the report it writes (the measurement itself is a benchmark, not a test)."""

import json

import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

from aihf.control import bench, speed_backends  # noqa: E402
from aihf.control.speed_backends import _schedule, parse_variant, write_markdown  # noqa: E402


def test_variants_parse_to_backend_loop_envs_and_train_freq():
    assert parse_variant("sbx") == {"backend": "sbx", "loop": "sac", "n_envs": 1, "train_freq": None}
    assert parse_variant("sb3:n_envs=4,train_freq=8") == {"backend": "sb3", "loop": "sac", "n_envs": 4, "train_freq": 8}
    assert parse_variant("aihf:sbx") == {"backend": "sbx", "loop": "aihf", "n_envs": 1, "train_freq": None}
    for bad in ("jax", "sb3:n_envs=0", "sb3:gradient_steps=2", "aihf:"):
        with pytest.raises(ValueError, match="variant"):
            parse_variant(bad)


def test_several_envs_keep_the_gradient_steps_per_env_step():
    # cpu: 1 gradient step per 2 env steps, whatever the number of envs stepped together.
    assert _schedule("cpu", 1, None) == (2, 1)
    assert _schedule("cpu", 2, None) == (1, 1)
    assert _schedule("cpu", 4, None) == (1, 2)
    assert _schedule("paper", 4, None) == (1, 4)
    # train_freq=N: 1 per N env steps.
    assert _schedule("cpu", 1, 4) == (4, 1)
    assert _schedule("cpu", 4, 8) == (2, 1)


def test_bench_writes_json_and_markdown_with_per_pair_ratios(tmp_path, monkeypatch):
    rates = {"sb3": 100.0, "sbx": 150.0, "aihf:sb3": 80.0, "aihf:sbx": 120.0}

    def fake_spawn(python, variant, **kw):
        name = ("aihf:" if variant["loop"] == "aihf" else "") + variant["backend"]
        rate = rates[name] * (1 + kw["seed"])  # a load that doubles between pairs cancels in the ratios
        out = {"cpu_steps_per_s": rate, "wall_steps_per_s": rate / 2, "setup_wall_s": 1.0}
        return {**out, "steady_cpu_steps_per_s": rate} if variant["loop"] == "aihf" else out

    monkeypatch.setattr(speed_backends, "_spawn", fake_spawn)
    argv = ["--envs", "HalfCheetah-v5", "--speed_backends", "sbx,aihf:sb3,aihf:sbx", "--speed_repeats", "2"]
    assert bench.main([*argv, "--results", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "speed_backends_HalfCheetah-v5.json").read_text())
    s = result["summary"]
    assert s["sbx"]["ratio_cpu"] == [1.5, 1.5] and s["sbx"]["ratio_to"] == "sb3"
    assert s["aihf:sb3"]["ratio_cpu"] == [0.8, 0.8]
    assert s["aihf:sbx"]["ratio_to"] == "aihf:sb3" and s["aihf:sbx"]["median_ratio_steady_cpu"] == 1.5
    assert [r["variant"] for r in result["runs"]] == ["sb3", "sbx", "aihf:sb3", "aihf:sbx"] + [
        "aihf:sbx",
        "aihf:sb3",
        "sbx",
        "sb3",
    ]
    assert result["command"].startswith("aihf control bench --envs HalfCheetah-v5 --speed_backends")
    md = (tmp_path / "speed_backends_HalfCheetah-v5.md").read_text()
    assert md == write_markdown(result)
    assert "| sbx | 225 | 112 | 1.50, 1.50 | 1.50 (to sb3) |" in md and result["command"] in md
