"""Fixed-length sampling of continuations and their log-probabilities under a model."""

from __future__ import annotations

import torch
from torch import nn

from ...data import pad_sequences
from ...llm.logprobs import sequence_logps


@torch.no_grad()
def sample_continuations(
    model: nn.Module,
    prompt_ids: list[list[int]],
    *,
    num_samples: int,
    length: int,
    seed: int,
    pad_token_id: int,
    eos_token_id: int | None,
    batch_size: int = 256,
) -> list[list[list[int]]]:
    """``num_samples`` continuations of exactly ``length`` tokens per prompt, drawn at
    temperature 1 from the full distribution (so log-prob differences estimate KL without bias,
    up to EOS: EOS is suppressed so that every continuation has the same length).

    Returns ``out[i][j]``: the token ids of sample ``j`` of prompt ``i``. Reproducible for a seed.
    """
    flat = [p for p in prompt_ids for _ in range(num_samples)]
    out: list[list[int]] = []
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(flat), batch_size):
            chunk = flat[start : start + batch_size]
            width = max(len(p) for p in chunk)
            input_ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, p in enumerate(chunk):
                input_ids[r, width - len(p) :] = torch.tensor(p)
                attention_mask[r, width - len(p) :] = 1
            generated = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=length,
                min_new_tokens=length,
                pad_token_id=pad_token_id,
                eos_token_id=eos_token_id,
            )
            out.extend(generated[:, width:].tolist())
    model.train(was_training)
    return [out[i * num_samples : (i + 1) * num_samples] for i in range(len(prompt_ids))]


@torch.no_grad()
def completion_logps(
    model: nn.Module, prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_token_id: int, batch_size=64
) -> list[float]:
    """``log pi(completion | prompt)`` (summed over completion tokens) for each row."""
    was_training = model.training
    model.eval()
    out: list[float] = []
    for start in range(0, len(prompt_ids), batch_size):
        batch = pad_sequences(
            prompt_ids[start : start + batch_size], completion_ids[start : start + batch_size], pad_token_id
        )
        out.extend(sequence_logps(model, **batch)[0].tolist())
    model.train(was_training)
    return out
