"""Hugging Face causal LMs: the AIHF trainers (implicit reward; explicit reward model + RL), and pipelines."""

from .config import AIHFConfig
from .generation import HFGenerator, SampleGenerator
from .loading import load_policy
from .logprobs import sequence_logps, token_logps
from .rl_config import AIHFRLConfig
from .rl_trainer import AIHFRLTrainer
from .trainer import AIHFTrainer

__all__ = [
    "AIHFConfig",
    "AIHFRLConfig",
    "AIHFRLTrainer",
    "AIHFTrainer",
    "HFGenerator",
    "SampleGenerator",
    "load_policy",
    "sequence_logps",
    "token_logps",
]
