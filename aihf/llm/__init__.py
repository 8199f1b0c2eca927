"""Hugging Face causal LMs: the AIHF trainer with an implicit reward, and its pipelines."""

from .config import AIHFConfig
from .generation import HFGenerator, SampleGenerator
from .loading import load_policy
from .logprobs import sequence_logps, token_logps
from .trainer import AIHFTrainer

__all__ = [
    "AIHFConfig",
    "AIHFTrainer",
    "HFGenerator",
    "SampleGenerator",
    "load_policy",
    "sequence_logps",
    "token_logps",
]
