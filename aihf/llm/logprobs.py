"""Sequence log-probabilities of completions under a causal LM."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


def token_logps(logits: Tensor, labels: Tensor) -> Tensor:
    """``log softmax(logits)[label]`` per position, without materialising the full log-softmax.

    Rows are processed one at a time so that peak memory stays at one ``(L, V)`` slice; half
    precision logits are upcast to float32 first.
    """
    out = []
    for row_logits, row_labels in zip(logits, labels):
        row_logits = row_logits.float() if row_logits.dtype in (torch.float16, torch.bfloat16) else row_logits
        picked = row_logits.gather(-1, row_labels.unsqueeze(-1)).squeeze(-1)
        out.append(picked - torch.logsumexp(row_logits, dim=-1))
    return torch.stack(out)


def sequence_logps(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    return_logits_sums: bool = False,
    padding_free: bool = False,
) -> tuple[Tensor, ...]:
    """Sum of completion-token log-probs of each row, and each row's completion token count.

    ``input_ids``, ``attention_mask`` and ``completion_mask`` are ``(B, L)`` right-padded rows.
    Token ``t`` is scored by the logits at position ``t - 1``; only positions with
    ``completion_mask == 1`` count, so prompts and padding never enter a loss. With
    ``return_logits_sums`` a third ``(B,)`` tensor (no gradient) sums, over the same positions,
    the mean logit over the vocabulary: TRL's ``logits/chosen`` is its token mean.

    With ``padding_free`` the rows are first packed (:func:`pack_rows`) so that the model runs
    on fewer, fuller rows; the results equal the padded pass up to float rounding, for models
    whose attention keeps packed sequences apart (see :func:`pack_rows`).
    """
    if padding_free:
        return _packed_sequence_logps(model, input_ids, attention_mask, completion_mask, return_logits_sums)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    # Prompt-tuning PEFT methods prepend virtual tokens: keep the positions of the real tokens.
    logits = logits[:, -input_ids.shape[1] :]
    per_token = token_logps(logits[:, :-1], input_ids[:, 1:])
    mask = completion_mask[:, 1:]
    logps, num_tokens = (per_token * mask.to(per_token.dtype)).sum(-1), mask.sum(-1)
    if not return_logits_sums:
        return logps, num_tokens
    with torch.no_grad():
        logits_sums = (logits[:, :-1].float().mean(-1) * mask).sum(-1)
    return logps, num_tokens, logits_sums


@dataclass
class PackedRows:
    """Right-padded rows packed end to end into ``(R, W)`` rows, ``R <= B``, ``W`` the longest row.

    ``position_ids`` restart at 0 where each sequence starts (trailing filler counts as one more
    sequence); ``source_row``/``source_pos`` say where each packed token came from (-1: filler).
    """

    input_ids: Tensor
    position_ids: Tensor
    source_row: Tensor
    source_pos: Tensor


def pack_rows(input_ids: Tensor, attention_mask: Tensor) -> PackedRows:
    """Pack the right-padded rows of ``input_ids`` (``(B, L)``, real tokens where ``attention_mask``
    is 1, all at the start of each row) first-fit-decreasing into rows as wide as the longest one.

    A model run on the result with ``attention_mask=None`` and these ``position_ids`` must keep
    the sequences apart: transformers' ``create_causal_mask`` does so (Llama, Qwen2, GPT-2 and
    most decoder models of transformers >= 4.54) by starting a new block wherever positions
    restart. The attention cost per row is that of the padded batch; fewer rows do the work.
    """
    lengths = attention_mask.sum(-1).tolist()
    width = max(lengths, default=0)
    bins: list[list[int]] = []
    room: list[int] = []
    for row in sorted(range(len(lengths)), key=lambda r: -lengths[r]):
        for b, free in enumerate(room):
            if lengths[row] <= free:
                bins[b].append(row)
                room[b] -= lengths[row]
                break
        else:
            bins.append([row])
            room.append(width - lengths[row])
    shape = (len(bins), width)
    # Filler is a real token rather than the pad id, which would make transformers warn that
    # no attention mask was passed; the filler's logits are never read.
    filler = int(input_ids[0, 0]) if input_ids.numel() else 0
    packed = torch.full(shape, filler, dtype=input_ids.dtype, device=input_ids.device)
    positions = torch.zeros(shape, dtype=torch.long, device=input_ids.device)
    source_row = torch.full(shape, -1, dtype=torch.long, device=input_ids.device)
    source_pos = torch.zeros(shape, dtype=torch.long, device=input_ids.device)
    for b, rows in enumerate(bins):
        start = 0
        for row in rows:
            n = lengths[row]
            packed[b, start : start + n] = input_ids[row, :n]
            positions[b, start : start + n] = torch.arange(n)
            source_row[b, start : start + n] = row
            source_pos[b, start : start + n] = torch.arange(n)
            start += n
        positions[b, start:] = torch.arange(width - start)
    return PackedRows(packed, positions, source_row, source_pos)


def check_packing(model: nn.Module, vocab_size: int) -> str | None:
    """Why ``model`` cannot run packed rows (its logits differ from the padded pass), or None.

    Scores two short random sequences both ways: cheap, and it catches architectures whose
    attention would let packed sequences see each other.
    """
    generator = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    ids = torch.randint(0, vocab_size, (3, 6), generator=generator).to(device)
    # Rows of 6, 3 and 2 tokens: the last two share one packed row.
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3, [1] * 2 + [0] * 4], device=device)
    completion = mask.clone()
    completion[:, 0] = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            padded = sequence_logps(model, ids, mask, completion)[0]
            packed = sequence_logps(model, ids, mask, completion, padding_free=True)[0]
    except Exception as e:  # a model whose forward takes no position_ids, a prompt-tuning adapter...
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    finally:
        model.train(was_training)
    if not torch.allclose(padded.float(), packed.float(), rtol=1e-3, atol=1e-3):
        return f"packed log-probs {packed.tolist()} differ from padded {padded.tolist()}"
    return None


def _packed_sequence_logps(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor, return_logits_sums: bool
) -> tuple[Tensor, ...]:
    packed = pack_rows(input_ids, attention_mask)
    logits = model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False).logits
    per_token = token_logps(logits[:, :-1], packed.input_ids[:, 1:])
    rows, pos = packed.source_row[:, 1:], packed.source_pos[:, 1:]
    # A label counts when it is a completion token of the same sequence as the logits before it
    # (the first token of a sequence has no predecessor, as position 0 of a padded row).
    scored = (rows >= 0) & (pos > 0)
    scored &= completion_mask[rows.clamp(min=0), pos].bool()
    num_rows = input_ids.shape[0]
    logps = torch.zeros(num_rows, dtype=per_token.dtype, device=per_token.device)
    logps = logps.index_add(0, rows[scored], per_token[scored])
    num_tokens = completion_mask[:, 1:].sum(-1)
    if not return_logits_sums:
        return logps, num_tokens
    with torch.no_grad():
        means = logits[:, :-1].float().mean(-1)[scored]
        logits_sums = torch.zeros(num_rows, device=means.device).index_add(0, rows[scored], means)
    return logps, num_tokens, logits_sums
