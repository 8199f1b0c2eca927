"""Sampling completions for self-play, behind a small interface so other engines can plug in.

A generator is any callable ``generator(model, prompts, seed) -> completions`` taking token-id
prompts and returning, per prompt, the generated token ids (ending with EOS if one was
produced, without padding). :class:`HFGenerator` ships, with three backends: ``model.generate``
(dynamic KV cache), ``"static"`` (aihf's own decode loop on a static KV cache) and ``"compiled"``
(that loop with the one-token decode step compiled by ``torch.compile``); a vLLM engine would
implement the same call.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

GENERATION_BACKENDS = ("generate", "static", "compiled")
CACHE_BUCKET = 64  # static-cache lengths are rounded up to a multiple: few shapes, so few recompilations


def inductor_options(device: torch.device) -> dict[str, int]:
    """``torch.compile`` options for inductor that pin the CPU vector width it generates C++ for.

    Inductor picks that width (its ``cpp.simdlen``: 512, 256, or 0 for scalar code) from
    ``ATEN_CPU_CAPABILITY``, but its on-disk graph cache (``TORCHINDUCTOR_CACHE_DIR``, shared by
    every process of a user) does not key on that variable (torch 2.13): a decode step compiled
    under AVX-512 was reused under ``ATEN_CPU_CAPABILITY=avx2`` and its 16-lane loops were built
    with 8-lane vectors, giving NaN logits (or heap corruption the other way round, or a C++ build
    error under ``default``). Passing the width as an option puts it in the cache key. Returns
    ``{}`` off the CPU (GPU kernels are Triton's) and where this torch has no such ISA probe (the
    cache then behaves as torch ships it).
    """
    if device.type != "cpu":
        return {}
    try:
        from torch._inductor.cpu_vec_isa import pick_vec_isa
    except ImportError:
        return {}
    return {"cpp.simdlen": pick_vec_isa().bit_width()}


class SampleGenerator(Protocol):
    def __call__(self, model: nn.Module, prompts: list[list[int]], seed: int) -> list[list[int]]: ...


@dataclass
class HFGenerator:
    """Batched sampling on left-padded prompts, reproducible for a given ``seed``.

    ``backend``: ``"generate"`` calls ``model.generate``. ``"static"`` runs the same sampling
    (temperature, top-k, top-p through transformers' warpers, then ``softmax`` and
    ``torch.multinomial``, one draw per row per step in the same order) in aihf's own loop on a
    ``StaticCache``: for a given seed it draws the same tokens as ``generate`` up to float rounding
    of the logits. Other generation settings of the model's ``generation_config`` (repetition
    penalty, ...) are ignored by this loop. ``"compiled"`` is ``"static"`` with the decode step
    compiled by ``torch.compile``; the first call for each (batch, cache length) shape compiles
    (seconds), later ones reuse it. Cache lengths are rounded up to a multiple of 64; the vector
    width inductor compiles for follows ``ATEN_CPU_CAPABILITY`` (see :func:`inductor_options`).
    Where the compiler backend fails (e.g. no C++ compiler for inductor on a CPU), ``"compiled"``
    warns once and decodes like ``"static"``, which draws the same tokens.
    """

    pad_token_id: int
    eos_token_id: int | list[int] | None
    max_new_tokens: int = 128
    do_sample: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int | None = None
    backend: str = "generate"

    def __post_init__(self):
        if self.backend not in GENERATION_BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(GENERATION_BACKENDS)}, got {self.backend!r}")
        self._compiled: dict[int, object] = {}  # id(model) -> its compiled forward

    @torch.no_grad()
    def __call__(self, model: nn.Module, prompts: list[list[int]], seed: int) -> list[list[int]]:
        if not prompts:
            return []
        device = next(model.parameters()).device
        step = self.batch_size or len(prompts)
        out: list[list[int]] = []
        # Sampling draws from its own seeded stream so training randomness (dropout, data order)
        # is unaffected and a resumed run draws the same samples.
        cuda_devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            for start in range(0, len(prompts), step):
                out.extend(self._generate(model, prompts[start : start + step], device))
        return out

    def _generate(self, model: nn.Module, prompts: list[list[int]], device: torch.device) -> list[list[int]]:
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):
            input_ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            attention_mask[r, width - len(p) :] = 1
        if self.backend != "generate":
            generated = self._decode(model, input_ids.to(device), attention_mask.to(device)).tolist()
            return [self._trim(row) for row in generated]
        kwargs = dict(max_new_tokens=self.max_new_tokens, do_sample=self.do_sample, use_cache=True)
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        generated = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_id,
            **kwargs,
        )[:, width:].tolist()
        return [self._trim(row) for row in generated]

    def _step_fn(self, model: nn.Module):
        if self.backend != "compiled":
            return model
        key = id(model)
        if key not in self._compiled:
            # Fixed shapes (dynamic=False): the decode step's inputs are (B, 1) tokens and a (B, L) mask.
            options = inductor_options(next(model.parameters()).device)
            self._compiled[key] = torch.compile(model.forward, dynamic=False, options=options)
        return self._compiled[key]

    def _warpers(self) -> list:
        from transformers.generation.logits_process import (
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        # The same warpers, in the same order, as generate() builds for these settings.
        warpers = []
        if self.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k:
            warpers.append(TopKLogitsWarper(top_k=self.top_k, min_tokens_to_keep=1))
        if self.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=self.top_p, min_tokens_to_keep=1))
        return warpers

    def _decode(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, max_new_tokens)`` new tokens (pad after a row's stop token) by a static-cache decode loop."""
        from transformers import StaticCache

        rows, width = input_ids.shape
        length = -(-(width + self.max_new_tokens) // CACHE_BUCKET) * CACHE_BUCKET
        cache = StaticCache(config=model.config, max_cache_len=length)
        # One mask for the whole loop: the prompt's padding is 0, every later slot 1 (slots not yet
        # written are hidden by the causal mask, which follows the cache's fill level), so the shape never changes.
        mask = torch.ones((rows, length), dtype=attention_mask.dtype, device=input_ids.device)
        mask[:, :width] = attention_mask
        positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
        stops = self.eos_token_id if isinstance(self.eos_token_id, list) else [self.eos_token_id]
        stops = torch.tensor([t for t in stops if t is not None], dtype=torch.long, device=input_ids.device)
        warpers = self._warpers() if self.do_sample else []
        step = self._step_fn(model)
        # transformers 5 renamed past_key_values to cache (the old name warns until 5.40).
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model passes kwargs on
        cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        out = model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{cache_arg: cache},
        )
        position = positions[:, -1:]
        unfinished = torch.ones(rows, dtype=torch.long, device=input_ids.device)
        tokens = []
        for t in range(self.max_new_tokens):
            scores = out.logits[:, -1].to(dtype=torch.float32, copy=True)
            for warp in warpers:
                scores = warp(input_ids, scores)  # these warpers do not read input_ids
            if self.do_sample:
                chosen = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            else:
                chosen = scores.argmax(-1)
            chosen = chosen * unfinished + self.pad_token_id * (1 - unfinished)
            tokens.append(chosen)
            unfinished = unfinished & ~torch.isin(chosen, stops)
            if t == self.max_new_tokens - 1 or not unfinished.any():
                break
            position = position + 1
            inputs = dict(input_ids=chosen[:, None], attention_mask=mask, position_ids=position, use_cache=True)
            out = self._step(model, step, **inputs, **{cache_arg: cache})
            step = self._step_fn(model)  # eager from now on if compiling failed
        return torch.stack(tokens, dim=1)

    def _step(self, model: nn.Module, step, **inputs):
        if step is model:
            return model(**inputs)
        try:
            return step(**inputs)
        except torch._dynamo.exc.BackendCompilerFailed as error:
            # The compiler fails before the graph runs, so the cache is untouched and the eager
            # step below is the same decode step: only the speed-up is lost.
            reason = str(error).strip().splitlines()
            warnings.warn(
                "generation_backend='compiled': torch.compile failed "
                f"({reason[1].strip() if len(reason) > 1 else reason[0]}); decoding without compilation",
                RuntimeWarning,
                stacklevel=2,
            )
            self._compiled[id(model)] = model
            return model(**inputs)

    def _trim(self, row: list[int]) -> list[int]:
        stops = self.eos_token_id if isinstance(self.eos_token_id, list) else [self.eos_token_id]
        for i, token in enumerate(row):
            if token in stops:
                return row[: i + 1]
        # No stop token: the sample ran to max_new_tokens (padding only follows a stop token).
        return row
