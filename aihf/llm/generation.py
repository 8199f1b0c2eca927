"""Sampling completions for self-play, behind a small interface so other engines can plug in.

A generator is any callable ``generator(model, prompts, seed) -> completions`` taking token-id
prompts and returning, per prompt, the generated token ids (ending with EOS if one was
produced, without padding). Only :class:`HFGenerator` (``model.generate`` with a KV cache)
ships; a vLLM engine would implement the same call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


class SampleGenerator(Protocol):
    def __call__(self, model: nn.Module, prompts: list[list[int]], seed: int) -> list[list[int]]: ...


@dataclass
class HFGenerator:
    """Batched ``model.generate`` on left-padded prompts, reproducible for a given ``seed``."""

    pad_token_id: int
    eos_token_id: int | list[int] | None
    max_new_tokens: int = 128
    do_sample: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int | None = None

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

    def _trim(self, row: list[int]) -> list[int]:
        stops = self.eos_token_id if isinstance(self.eos_token_id, list) else [self.eos_token_id]
        for i, token in enumerate(row):
            if token in stops:
                return row[: i + 1]
        # No stop token: the sample ran to max_new_tokens (padding only follows a stop token).
        return row
