"""Programmatic rewards beside the learned reward model (TRL's ``reward_funcs``).

The policy step of :class:`aihf.llm.AIHFRLTrainer` is trained on
``w_0 * r(x, y) + sum_i w_i * f_i(x, y)``: ``r`` the reward model's score, ``f_i`` the callables
given as ``reward_funcs`` and ``w`` the config's ``reward_weights`` (default 1 each). With
``reward_weights=[0, 1]`` and a known gold scorer as the one function, the policy follows the gold
alone: the oracle check that the policy step can follow a reward (docs/aihf_rl.md). The reward
steps never see these functions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError

# fn(prompts, completions) -> one score per completion, on decoded texts (TRL's reward-function calling form).
RewardFunc = Callable[[list[str], list[str]], Sequence[float]]


def func_name(func: RewardFunc, index: int) -> str:
    """The name a reward function's metrics are logged under (``rewards/<name>/mean``)."""
    return getattr(func, "__name__", None) or f"reward_func_{index}"


def as_func_list(funcs: RewardFunc | Sequence[RewardFunc] | None) -> list[RewardFunc]:
    """``reward_funcs`` as a list: ``None`` is none, one callable is a list of one (as TRL takes it)."""
    if funcs is None:
        return []
    return [funcs] if callable(funcs) else list(funcs)


def resolve_weights(funcs: Sequence[RewardFunc], weights: Sequence[float] | None) -> list[float]:
    """The weights of ``[reward model, *funcs]``: ``weights`` checked against their count, or 1 each.

    Raises :class:`aihf.ConfigError` when a function is not callable or is a model (TRL takes reward models
    in reward_funcs; aihf in reward_model=), the counts differ or every
    weight is 0 (the policy would have no reward at all).
    """
    for i, f in enumerate(funcs):
        if not callable(f) or isinstance(f, torch.nn.Module):  # a module is callable, but on token ids
            # TRL also takes a reward model (a Hub id, a folder or a model object) in reward_funcs.
            model = " (a reward model goes in reward_model=, as TRL's reward_funcs=<model> does)"
            raise ConfigError(
                f"reward_funcs[{i}] is a {type(f).__name__}, not a callable fn(prompts, completions)"
                f"{model if isinstance(f, (str, os.PathLike, torch.nn.Module)) else ''}"
            )
    if weights is None:
        return [1.0] * (1 + len(funcs))
    if len(weights) != 1 + len(funcs):
        raise ConfigError(
            f"reward_weights has {len(weights)} values but there are {1 + len(funcs)} rewards "
            f"(the reward model, then {len(funcs)} reward function(s))"
        )
    resolved = [float(w) for w in weights]
    if not any(resolved):
        raise ConfigError(f"reward_weights={list(weights)}: every weight is 0, so the policy would have no reward")
    return resolved


def call_reward_func(func: RewardFunc, index: int, prompts: list[str], completions: list[str]) -> Tensor:
    """``func``'s scores as a float32 tensor ``(B,)``; a wrong count or a non-number raises ``ValueError``."""
    name = func_name(func, index)
    returned = func(prompts, completions)
    try:
        values = list(returned)
    except TypeError:
        raise ValueError(
            f"reward function '{name}' returned a {type(returned).__name__}, not one score per completion"
        ) from None
    if len(values) != len(completions):
        raise ValueError(f"reward function '{name}' returned {len(values)} scores for {len(completions)} completions")
    try:
        scores = [float(v) for v in values]
    except (TypeError, ValueError) as e:
        raise ValueError(f"reward function '{name}' returned a non-number: {e}") from e
    if not all(math.isfinite(v) for v in scores):
        raise ValueError(f"reward function '{name}' returned a non-finite score")
    return torch.tensor(scores, dtype=torch.float32)


def combined_scores(
    model_scores: Tensor | None,
    funcs: Sequence[RewardFunc],
    weights: Sequence[float],
    prompts: list[str],
    completions: list[str],
) -> tuple[Tensor, dict[str, float]]:
    """``w_0 * model_scores + sum_i w_i * f_i(prompts, completions)``: ``(B,)`` on ``model_scores``' device.

    ``model_scores`` may be ``None`` when ``w_0 == 0`` (the reward model is not run). Returns the
    sum and, when there are functions, each term's mean and standard deviation (over the batch) as
    ``rewards/<name>/mean`` and ``rewards/<name>/std`` (TRL's names).
    """
    if model_scores is None and weights[0] != 0:
        raise ValueError("the reward model's scores are needed (its weight is not 0)")
    device = model_scores.device if model_scores is not None else torch.device("cpu")
    total = torch.zeros(len(completions), device=device)
    metrics: dict[str, float] = {}
    if model_scores is not None:
        total = total + weights[0] * model_scores
        if funcs:
            metrics["rewards/reward_model/mean"] = model_scores.mean().item()
            metrics["rewards/reward_model/std"] = model_scores.std(unbiased=False).item()
    for i, (func, w) in enumerate(zip(funcs, weights[1:])):
        scores = call_reward_func(func, i, prompts, completions).to(device)
        metrics[f"rewards/{func_name(func, i)}/mean"] = scores.mean().item()
        metrics[f"rewards/{func_name(func, i)}/std"] = scores.std(unbiased=False).item()
        total = total + w * scores
    return total, metrics
