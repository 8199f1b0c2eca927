"""AIHF for continuous control (MuJoCo / any Gymnasium Box env) with stable-baselines3 SAC.

Needs the ``control`` extra: ``pip install "aihf[control]"``. See docs/control.md.
"""

from .config import CollectConfig, ControlConfig
from .data import Preferences, Trajectories, label_preferences, load_preferences, load_trajectories
from .reward import RewardNet

__all__ = [
    "CollectConfig",
    "ControlConfig",
    "ControlTrainer",
    "Preferences",
    "RewardNet",
    "Trajectories",
    "label_preferences",
    "load_preferences",
    "load_trajectories",
]


def __getattr__(name):
    # The trainer imports stable-baselines3; load it only when asked for.
    if name == "ControlTrainer":
        from .trainer import ControlTrainer

        return ControlTrainer
    raise AttributeError(name)
