"""Data parallelism and update guards of :class:`aihf.llm.AIHFRLTrainer` (a mixin).

Under torchrun each process takes its share of every step's prompts and preference pairs, and gradients are
averaged over processes before each update, as DDP does, but without wrapping the models, so that generation
and adapter switching work on them unchanged. RLOO groups are per process, and reward whitening / advantage
normalisation use the process's own batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from . import guards


def trainable(model: nn.Module) -> dict[str, Tensor]:
    """``model``'s parameters that require a gradient, by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


class DataParallelMixin:
    """Needs ``self.world``, ``self.rank``, ``self.device``, ``self.args``, ``self.nonfinite_skipped`` and
    ``self._checkpoint_dirs()``."""

    def _broadcast(self, model: nn.Module) -> None:
        if self.world > 1:
            with torch.no_grad():
                for p in model.parameters():
                    dist.broadcast(p.data, src=0)

    def _sync_grads(self, model: nn.Module) -> None:
        """Average the gradients over processes (what DDP does)."""
        if self.world == 1:
            return
        for p in trainable(model).values():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(self.world)

    def _average(self, metrics: dict[str, float]) -> dict[str, float]:
        """Metrics averaged over processes (every process logs the same keys)."""
        if self.world == 1 or not metrics:
            return metrics
        names = sorted(metrics)
        values = torch.tensor([float(metrics[n]) for n in names], dtype=torch.float64, device=self.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return dict(zip(names, (values / self.world).tolist()))

    def _sum_over_processes(self, value: float) -> float:
        if self.world == 1:
            return value
        total = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total.item()

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def _autocast(self):
        if self.args.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return torch.autocast(device_type=self.device.type, enabled=False)

    def _update_is_finite(self, where: str, terms: dict[str, Any], model: nn.Module) -> bool:
        """Whether the update about to be applied to ``model`` is finite (after the gradients are
        averaged over processes, so that every process decides alike). If not: raise
        :class:`aihf.NonFiniteError`, or with ``skip_nonfinite_steps`` count it and return False."""
        bad = guards.nonfinite_terms(terms)
        reason = ", ".join(f"'{name}' is {guards.describe(terms[name])}" for name in bad) or None
        if reason is None:
            name = guards.nonfinite_gradient(trainable(model).items())
            reason = f"the gradient of '{name}' is not finite" if name is not None else None
        if self.world > 1:
            flag = torch.tensor([float(reason is not None)], device=self.device)
            dist.all_reduce(flag)
            if flag.item() > 0 and reason is None:
                reason = "a non-finite value on another process"
        if reason is None:
            return True
        if not self.args.skip_nonfinite_steps:
            found = self._checkpoint_dirs()
            raise guards.nonfinite_error(where, reason, found[-1][1] if found else None)
        self.nonfinite_skipped += 1
        if self.rank == 0:
            guards.report_skip(where, reason, self.nonfinite_skipped)
        return False
