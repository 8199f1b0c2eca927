"""State of online self-play AIHF (method.md, "Instantiations", 3): rounds, the opponent (the policy
frozen at the start of each round), the per-round buffer of opponent samples, and their save/load
with a checkpoint so that a resumed run draws the same samples."""

from __future__ import annotations

import json
import math
import os
import random
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from ..data import concat_padded, match_end_tokens, pad_sequences
from ..errors import ConfigError
from . import guards
from .generation import SampleGenerator
from .logprobs import sequence_logps
from .model_setup import stable_seed

SELF_PLAY_STATE = "aihf_self_play.json"
SELF_PLAY_SAMPLES = "aihf_self_play_samples_rank{rank}.json"
OPPONENT_WEIGHTS = "aihf_opponent.safetensors"

_ROW_KEYS = ("input_ids", "attention_mask", "completion_mask")


def round_length(args: Any, train_size: int) -> int:
    """Optimizer steps per self-play round: ``self_play_round_steps``, else
    ``self_play_round_epochs`` epochs of ``train_size`` items rounded up to whole steps."""
    if args.self_play_round_steps:
        return args.self_play_round_steps
    per_step = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
    steps_per_epoch = math.ceil(train_size / per_step)
    return max(1, math.ceil(args.self_play_round_epochs * steps_per_epoch))


class SelfPlayState:
    """The opponent, the current round and the round's samples.

    ``samples`` maps a demonstration's index to ``(sample token ids, opponent log-prob of the
    demonstration, opponent log-prob of the sample)``; ``gen_calls`` is ``(global_step, calls during
    that step)`` and seeds generation, so that a resumed run samples as the uninterrupted one.
    """

    def __init__(self, opponent: nn.Module, stop_ids: list[int]):
        self.opponent = opponent
        self.stop_ids = stop_ids
        self.round: int | None = None
        self.samples: dict[int, tuple[list[int], float, float]] = {}
        self.gen_calls = (-1, 0)

    def start_round_if_due(self, global_step: int, steps_per_round: int, policy: nn.Module) -> None:
        """At a round's first step: the opponent becomes a copy of ``policy`` and the buffer empties."""
        current = global_step // steps_per_round
        if current != self.round:
            self.opponent.load_state_dict(policy.state_dict())
            self.round = current
            self.samples.clear()

    def next_seed(self, seed: int, global_step: int, process_index: int) -> int:
        step, calls = self.gen_calls
        calls = calls + 1 if step == global_step else 0
        self.gen_calls = (global_step, calls)
        return stable_seed(seed, self.round, global_step, calls, process_index)

    @torch.no_grad()
    def samples_for(
        self,
        demo_rows: dict[str, torch.Tensor],
        indices: list[int],
        prompts: list[list[int]],
        *,
        generator: SampleGenerator,
        seed: int,
        regen_prob: float,
        max_length: int | None,
        end_token_id: int,
        pad_token_id: int,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager],
        logps_options: dict[str, Any],
    ):
        """Opponent samples for a batch's demonstrations (cached per round; drawn again with
        probability ``regen_prob``), the opponent's log-probs of each demonstration and sample, the
        demonstrations' completion mask and the samples' rows. An end token counts in a
        (demonstration, sample) pair only when both have one (:func:`aihf.data.match_end_tokens`).

        ``demo_rows``: the demonstrations' ``input_ids``/``attention_mask``/``completion_mask``, ``(D, T)``;
        ``indices``/``prompts``: each demonstration's dataset index and prompt ids. Returns
        ``(opponent_demo (D,), opponent_sample (D,), demo completion_mask (D, T), sample rows)``.
        """
        regenerate = regen_prob > 0 and random.Random(seed).random() < regen_prob
        todo = [k for k, j in enumerate(indices) if regenerate or j not in self.samples]
        if todo:
            samples = generator(self.opponent, [prompts[k] for k in todo], seed)
            samples = [s[: max_length - len(prompts[k])] if max_length else s for k, s in zip(todo, samples)]
            samples = [s or [end_token_id] for s in samples]  # never an empty answer: the data's end token alone
            todo_rows = {key: demo_rows[key][todo] for key in _ROW_KEYS}
            sample_rows = pad_sequences([prompts[k] for k in todo], samples, pad_token_id)
            sample_rows = {k: v.to(device) for k, v in sample_rows.items()}
            both = concat_padded(*match_end_tokens(todo_rows, sample_rows, self.stop_ids), pad_token_id)
            with autocast():
                scored = sequence_logps(self.opponent, **both, **logps_options)[0].tolist()
            for i, (k, sample) in enumerate(zip(todo, samples)):
                self.samples[indices[k]] = (sample, scored[i], scored[len(todo) + i])
        cached = [self.samples[j] for j in indices]
        sample_rows = pad_sequences(prompts, [c[0] for c in cached], pad_token_id)
        sample_rows = {k: v.to(device) for k, v in sample_rows.items()}
        matched_demos, sample_rows = match_end_tokens(demo_rows, sample_rows, self.stop_ids)
        opponent_demo = torch.tensor([c[1] for c in cached], device=device)
        opponent_sample = torch.tensor([c[2] for c in cached], device=device)
        return opponent_demo, opponent_sample, matched_demos["completion_mask"], sample_rows

    def nbytes(self) -> int:
        """Bytes the opponent adds to each checkpoint."""
        return sum(p.numel() * p.element_size() for p in self.opponent.parameters())

    def save(self, folder: str, process_index: int, should_save: bool) -> None:
        """Write this process's sample buffer, and (``should_save``) the round and the opponent."""
        os.makedirs(folder, exist_ok=True)  # other ranks may get here before rank 0 created it
        samples = {str(j): list(v) for j, v in self.samples.items()}
        with open(os.path.join(folder, SELF_PLAY_SAMPLES.format(rank=process_index)), "w") as f:
            json.dump(samples, f)
        if should_save:
            with open(os.path.join(folder, SELF_PLAY_STATE), "w") as f:
                json.dump({"round": self.round, "gen_calls": list(self.gen_calls)}, f)
            save_model(self.opponent, os.path.join(folder, OPPONENT_WEIGHTS))

    def load(self, checkpoint: str, process_index: int) -> None:
        """Restore what :meth:`save` wrote; a checkpoint without it warns and starts a new round.
        Raises :class:`aihf.ConfigError` naming the file and field of a malformed state."""
        state_file = os.path.join(checkpoint, SELF_PLAY_STATE)
        weights = os.path.join(checkpoint, OPPONENT_WEIGHTS)
        if not (os.path.isfile(state_file) and os.path.isfile(weights)):
            warnings.warn(f"{checkpoint} has no self-play state; the next step starts a new round", stacklevel=3)
            return
        with open(state_file) as f:
            state = json.load(f)
        gen_calls = state.get("gen_calls")
        if not isinstance(gen_calls, list) or len(gen_calls) != 2:
            raise ConfigError(f"{state_file}: 'gen_calls' must be a list of two integers, got {gen_calls!r}")
        gen_calls = tuple(guards.check_int(v, "gen_calls", state_file, minimum=-1) for v in gen_calls)
        round_ = guards.check_int(state.get("round"), "round", state_file)
        # Loaded on the CPU, then copied into the opponent's parameters wherever they live.
        load_model(self.opponent, weights, device="cpu")
        self.round = round_
        self.gen_calls = gen_calls
        self.samples = {}
        samples_file = os.path.join(checkpoint, SELF_PLAY_SAMPLES.format(rank=process_index))
        if os.path.isfile(samples_file):  # absent when resuming on more processes: those resample
            with open(samples_file) as f:
                self.samples = {int(j): (v[0], v[1], v[2]) for j, v in json.load(f).items()}
