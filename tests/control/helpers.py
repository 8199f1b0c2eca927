"""Pendulum-v1 data from a hand-written swing-up controller, so tests need no demonstrator training.

Pendulum-v1 has no early termination, so the learned reward's shift to non-negative values
(aihf.control.trainer) cannot solve it on its own (it would solve InvertedPendulum: staying alive
is all that task asks).
"""

import numpy as np

from aihf.control.collect import write_dataset
from aihf.control.config import CollectConfig

ENV = "Pendulum-v1"


def controller(noise: float, seed: int):
    """Energy-pumping swing-up, PD near the top, plus Gaussian torque noise of std ``noise``
    (in both modes). Noise 0 scores about -140 per episode, a uniform random policy about -1200."""
    rng = np.random.default_rng(seed)

    def act(obs, deterministic):
        cos, sin, speed = obs
        if cos > 0.85:
            torque = -(10.0 * np.arctan2(sin, cos) + 2.0 * speed)
        else:
            energy = 0.5 * speed**2 + 15.0 * cos  # 15 at rest upright (g=10, l=1: 3g/2l)
            torque = 2.0 * (1.0 if speed >= 0 else -1.0) * (1.0 if energy < 15.0 else -1.0)
        return np.clip([torque + noise * rng.standard_normal()], -2.0, 2.0)

    return act


def pendulum_dataset(out_dir, num_preferences=60, seed=0) -> dict:
    config = CollectConfig(
        env_id=ENV,
        output_dir=str(out_dir),
        seed=seed,
        num_demonstrations=2,
        pool_episodes_per_snapshot=4,
        num_preferences=num_preferences,
        segment_length=50,
        eval_episodes=4,
        progress=False,
    )
    pool = [controller(n, seed + i) for i, n in enumerate((4.0, 2.0, 1.0, 0.3))]
    return write_dataset(config, controller(0.0, seed), controller(2.0, seed + 7), pool)


def pendulum_config(data_dir, out, **settings):
    """A :class:`~aihf.control.config.ControlConfig` for a small run on ``ENV``: ``data_dir``'s
    demonstrations and preferences, ``output_dir=out``, 16x16 networks, batches of 32, one evaluation
    episode, no progress bar; ``settings`` override any field."""
    from aihf.control.config import ControlConfig

    base = dict(
        env_id=ENV,
        demonstrations=str(data_dir / "demos.npz"),
        preferences=str(data_dir / "preferences.npz"),
        output_dir=str(out),
        net_arch="16,16",
        batch_size=32,
        reward_net_arch="16,16",
        eval_episodes=1,
        progress=False,
    )
    return ControlConfig(**{**base, **settings})
