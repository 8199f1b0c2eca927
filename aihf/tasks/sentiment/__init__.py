"""The built-in alignment task with an external gold reward: continue Shakespeare so that VADER
finds it positive (docs/benchmark.md). Base model (:mod:`.base`), prompts (:mod:`.corpus`), gold
reward and Bradley-Terry labels (:mod:`.gold`), data (:mod:`.data`)."""

from .base import BaseModelConfig, base_model_dir, build_base
from .data import TaskConfig, build_task_data
from .gold import bradley_terry_prob, load_gold, vader_compound

__all__ = [
    "BaseModelConfig",
    "TaskConfig",
    "base_model_dir",
    "bradley_terry_prob",
    "build_base",
    "build_task_data",
    "load_gold",
    "vader_compound",
]
