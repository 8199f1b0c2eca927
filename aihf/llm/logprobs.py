"""Sequence log-probabilities of completions under a causal LM."""

from __future__ import annotations

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
) -> tuple[Tensor, ...]:
    """Sum of completion-token log-probs of each row, and each row's completion token count.

    Token ``t`` is scored by the logits at position ``t - 1``; only positions with
    ``completion_mask == 1`` count, so prompts and padding never enter a loss. With
    ``return_logits_sums`` a third ``(B,)`` tensor (no gradient) sums, over the same positions,
    the mean logit over the vocabulary: TRL's ``logits/chosen`` is its token mean.
    """
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
