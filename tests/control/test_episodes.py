"""Evaluation episodes report length and forward distance beside the return (aihf.control.envs)."""

import numpy as np
import pytest

from aihf.control.envs import episode_summary, evaluate_episodes

pytest.importorskip("mujoco")


def test_distance_is_what_halfcheetahs_forward_reward_integrates():
    # Zero torque: no control cost, so the return is the forward velocity summed, i.e. distance / dt.
    played = evaluate_episodes(lambda o: np.zeros(6, dtype=np.float32), "HalfCheetah-v5", 1, seed=0)
    assert played["lengths"].tolist() == [1000]  # truncated, never terminated
    assert played["returns"][0] == pytest.approx(played["x_distance"][0] / 0.05, rel=1e-6, abs=1e-9)
    summary = episode_summary(played)
    assert summary["episode_length_mean"] == 1000.0
    assert summary["x_distance_mean"] == pytest.approx(played["x_distance"][0])


def test_a_falling_hopper_ends_early_and_its_length_says_so():
    played = evaluate_episodes(lambda o: np.zeros(3, dtype=np.float32), "Hopper-v5", 2, seed=0)
    assert (played["lengths"] < 500).all()  # zero torque: unhealthy (fallen) after ~140 steps
    assert episode_summary(played)["episode_length_mean"] == pytest.approx(played["lengths"].mean())


def test_an_env_without_positions_has_no_distance():
    played = evaluate_episodes(lambda o: np.zeros(1, dtype=np.float32), "Pendulum-v1", 2, seed=0)
    assert played["lengths"].tolist() == [200, 200]
    assert np.isnan(played["x_distance"]).all()
    assert "x_distance_mean" not in episode_summary(played)
