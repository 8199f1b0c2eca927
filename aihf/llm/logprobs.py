"""Sequence log-probabilities of completions under a causal LM."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


# Columns of the token statistics sequence_logps sums per row: the mean logit over the vocabulary, the
# entropy, the top-1 hit, and log(sum_v p_v^2) (WPO's alignment term, TRL's log_sum_sq_probs).
TOKEN_STATS = ("logits", "entropy", "top1", "log_sum_sq_probs")


@torch.no_grad()
def token_stats(logits: Tensor, labels: Tensor) -> Tensor:
    """``(N, 4)`` statistics of ``N`` scored positions (:data:`TOKEN_STATS`): the mean logit over the
    vocabulary, the entropy of the predicted distribution (nats), whether ``labels`` is its argmax
    (1.0/0.0) and ``log sum_v p_v^2``. ``logits`` ``(N, V)``, ``labels`` ``(N,)``; float32, no
    gradient, in chunks of positions to bound memory at one ``(chunk, V)`` log-softmax."""
    out = []
    for start in range(0, logits.shape[0], 1024):
        chunk = logits[start : start + 1024].float()
        logp = torch.log_softmax(chunk, dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)
        top1 = (chunk.argmax(-1) == labels[start : start + 1024]).float()
        out.append(torch.stack([chunk.mean(-1), entropy, top1, torch.logsumexp(2 * logp, dim=-1)], dim=-1))
    return torch.cat(out) if out else logits.new_zeros(0, len(TOKEN_STATS), dtype=torch.float32)


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
    shared_prompt_pairs: int = 0,
    return_token_stats: bool = False,
) -> tuple[Tensor, ...]:
    """Sum of completion-token log-probs of each row, and each row's completion token count.

    ``input_ids``, ``attention_mask`` and ``completion_mask`` are ``(B, L)`` right-padded rows.
    Token ``t`` is scored by the logits at position ``t - 1``; only positions with
    ``completion_mask == 1`` count, so prompts and padding never enter a loss. With
    ``return_logits_sums`` a third ``(B,)`` tensor (no gradient) sums, over the same positions,
    the mean logit over the vocabulary: TRL's ``logits/chosen`` is its token mean. With
    ``return_token_stats`` the third tensor is ``(B, 4)`` instead: per row, the sums over completion
    positions of :func:`token_stats` (:data:`TOKEN_STATS`), no gradient.

    With ``padding_free`` the rows are first packed (:func:`pack_rows`) so that the model runs
    on fewer, fuller rows; the results equal the padded pass up to float rounding, for models
    whose attention keeps packed sequences apart (see :func:`pack_rows`).

    With ``shared_prompt_pairs=n`` rows ``i`` and ``n + i`` (``i < n``: a pair's chosen and
    rejected answer) share their prompt, which is then run once: see :func:`shared_prompt_logps`.
    """
    stats = return_logits_sums or return_token_stats
    if shared_prompt_pairs:
        out = shared_prompt_logps(model, input_ids, attention_mask, completion_mask, shared_prompt_pairs, stats)
    elif padding_free:
        out = _packed_sequence_logps(model, input_ids, attention_mask, completion_mask, stats)
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        # Prompt-tuning PEFT methods prepend virtual tokens: keep the positions of the real tokens.
        logits = logits[:, -input_ids.shape[1] :]
        per_token = token_logps(logits[:, :-1], input_ids[:, 1:])
        mask = completion_mask[:, 1:]
        out = (per_token * mask.to(per_token.dtype)).sum(-1), mask.sum(-1)
        if stats:
            rows, pos = mask.nonzero(as_tuple=True)
            per_position = token_stats(logits[rows, pos], input_ids[rows, pos + 1])
            out += (_row_sums(per_position, rows, input_ids.shape[0]),)
    if return_logits_sums and not return_token_stats:
        return out[0], out[1], out[2][:, 0]
    return out


def _row_sums(per_position: Tensor, rows: Tensor, num_rows: int) -> Tensor:
    return torch.zeros(num_rows, per_position.shape[1], device=per_position.device).index_add(0, rows, per_position)


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


def packed_logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Logits ``(B, L, V)`` of right-padded rows, computed on the packed rows of :func:`pack_rows`
    (fewer rows, no compute on padding) and put back in place; padding positions get zeros.
    Equal to the padded pass's logits at real tokens up to float rounding (same model caveat as
    :func:`pack_rows`)."""
    packed = pack_rows(input_ids, attention_mask)
    logits = model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False).logits
    real = packed.source_row >= 0
    out = logits.new_zeros((*input_ids.shape, logits.shape[-1]))
    return out.index_put((packed.source_row[real], packed.source_pos[real]), logits[real])


def check_packing(model: nn.Module, vocab_size: int, shared_prompts: bool = False) -> str | None:
    """Why ``model`` cannot run packed rows (its log-probs differ from the padded pass), or None.

    Scores three short random sequences both ways (packed with ``padding_free``, or with the
    first two sharing their prompt): cheap, and it catches architectures whose attention would
    let packed sequences see each other or that ignore ``position_ids`` or a 4D mask.
    """
    generator = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    ids = torch.randint(0, vocab_size, (3, 6), generator=generator).to(device)
    ids[1, :2] = ids[0, :2]  # rows 0 and 1: one prompt of 2 tokens, two answers
    # Rows of 6, 4 and 2 tokens: packed, the last two share one row; with shared prompts the
    # rejected answer (row 1) has two tokens, so that the second is scored after the mask applies.
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4], device=device)
    completion = mask.clone()
    completion[:2, :2] = 0
    completion[2, 0] = 0
    fast = {"shared_prompt_pairs": 1} if shared_prompts else {"padding_free": True}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            padded = sequence_logps(model, ids, mask, completion)[0]
            packed = sequence_logps(model, ids, mask, completion, **fast)[0]
    except Exception as e:  # a model whose forward takes no position_ids, a prompt-tuning adapter...
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    finally:
        model.train(was_training)
    if not torch.allclose(padded.float(), packed.float(), rtol=1e-3, atol=1e-3):
        return f"packed log-probs {packed.tolist()} differ from padded {padded.tolist()}"
    return None


def _packed_sequence_logps(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor, return_token_stats: bool
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
    if not return_token_stats:
        return logps, num_tokens
    per_position = token_stats(logits[:, :-1][scored], packed.input_ids[:, 1:][scored])
    return logps, num_tokens, _row_sums(per_position, rows[scored], num_rows)


def shared_prompt_logps(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    num_pairs: int,
    return_token_stats: bool = False,
) -> tuple[Tensor, ...]:
    """:func:`sequence_logps` with each pair's prompt computed once for both answers (prefix sharing);
    ``return_token_stats`` adds the ``(B, 4)`` sums of :func:`token_stats`.

    Rows ``i`` and ``num_pairs + i`` (``i < num_pairs``) must hold the same prompt (the tokens
    before the first ``completion_mask == 1``). Each pair becomes one sequence
    ``prompt + chosen + rejected`` where the rejected answer's positions continue the prompt's and
    its tokens attend to the prompt and to themselves, not to the chosen answer (a 4D additive
    attention mask); the other rows stay whole. Sequences are packed first-fit-decreasing into
    rows as wide as the longest, as :func:`pack_rows` does. Same results as the padded pass up to
    float rounding, for models that take a 4D attention mask and ``position_ids``.
    """
    device = input_ids.device
    lengths = attention_mask.sum(-1).tolist()
    prompt_lengths = [int(row.argmax()) if row.any() else n for row, n in zip(completion_mask, lengths)]
    # Units: lists of (row, start, stop, branch) pieces; branch 2 (rejected) does not see branch 1.
    units: list[list[tuple[int, int, int, int]]] = []
    for i in range(num_pairs):
        j, p = num_pairs + i, prompt_lengths[i]
        if prompt_lengths[j] != p or not torch.equal(input_ids[i, :p], input_ids[j, :p]):
            raise ValueError(f"rows {i} and {j} do not share their prompt")
        units.append([(i, 0, p, 0), (i, p, lengths[i], 1), (j, p, lengths[j], 2)])
    units += [[(r, 0, lengths[r], 0)] for r in range(2 * num_pairs, len(lengths))]
    sizes = [sum(stop - start for _, start, stop, _ in unit) for unit in units]
    width = max(sizes, default=0)
    bins: list[list[int]] = []
    room: list[int] = []
    for u in sorted(range(len(units)), key=lambda u: -sizes[u]):
        b = next((b for b, free in enumerate(room) if sizes[u] <= free), None)
        if b is None:
            bins.append([])
            room.append(width)
            b = len(bins) - 1
        bins[b].append(u)
        room[b] -= sizes[u]

    shape = (len(bins), width)
    filler = int(input_ids[0, 0]) if input_ids.numel() else 0
    packed = torch.full(shape, filler, dtype=input_ids.dtype)
    positions = torch.zeros(shape, dtype=torch.long)
    unit_of = torch.full(shape, -1, dtype=torch.long)
    branch = torch.zeros(shape, dtype=torch.long)
    source_row = torch.full(shape, -1, dtype=torch.long)
    source_pos = torch.zeros(shape, dtype=torch.long)
    predecessor = torch.zeros(shape, dtype=torch.long)  # where the logits that score each token are
    for b, members in enumerate(bins):
        at = 0
        for u in members:
            prompt_end = None
            for row, start, stop, kind in units[u]:
                n = stop - start
                span = slice(at, at + n)
                packed[b, span] = input_ids[row, start:stop].cpu()
                positions[b, span] = torch.arange(start, stop)
                unit_of[b, span], branch[b, span] = u, kind
                source_row[b, span], source_pos[b, span] = row, torch.arange(start, stop)
                predecessor[b, span] = torch.arange(at - 1, at + n - 1)
                if kind == 0:
                    prompt_end = at + n - 1
                elif kind == 2:  # the rejected answer's first token follows the prompt, not the chosen answer
                    predecessor[b, at] = prompt_end
                at += n
        positions[b, at:] = torch.arange(width - at)
    same = (unit_of[:, :, None] == unit_of[:, None, :]) & (unit_of[:, :, None] >= 0)
    allowed = same & ~((branch[:, :, None] == 2) & (branch[:, None, :] == 1))
    allowed &= torch.ones(width, width, dtype=torch.bool).tril()
    allowed |= torch.eye(width, dtype=torch.bool)  # filler attends to itself: no empty softmax row
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(shape[0], 1, width, width, dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)

    logits = model(
        input_ids=packed.to(device), attention_mask=mask.to(device), position_ids=positions.to(device), use_cache=False
    ).logits
    scored = (source_row >= 0) & (source_pos > 0)
    scored &= completion_mask.cpu()[source_row.clamp(min=0), source_pos].bool()
    # Row-major order throughout: nonzero() lists the scored tokens packed row by packed row.
    rows_idx = scored.nonzero(as_tuple=True)[0].to(device)
    pred_idx, labels = predecessor[scored].to(device), packed[scored].to(device)
    targets = source_row[scored].to(device)
    # One packed row at a time, as token_logps does, to keep one (W, V) log-normaliser alive.
    per_token = torch.cat(
        [_row_logps(logits[r], pred_idx[rows_idx == r], labels[rows_idx == r]) for r in range(shape[0])]
    )
    num_rows = input_ids.shape[0]
    logps = torch.zeros(num_rows, dtype=per_token.dtype, device=device).index_add(0, targets, per_token)
    num_tokens = completion_mask[:, 1:].sum(-1)
    if not return_token_stats:
        return logps, num_tokens
    per_position = token_stats(logits[rows_idx, pred_idx], labels)
    return logps, num_tokens, _row_sums(per_position, targets, num_rows)


def _row_logps(row_logits: Tensor, at: Tensor, labels: Tensor) -> Tensor:
    """``log softmax(row_logits[at])[labels]`` for one packed row, upcasting half precision."""
    picked = row_logits[at]
    picked = picked.float() if picked.dtype in (torch.float16, torch.bfloat16) else picked
    return picked.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(picked, dim=-1)
