"""Non-finite losses and gradients in :class:`aihf.llm.AIHFTrainer`: a NaN/inf loss term or gradient
stops the run with an error naming the step and the term (or parameter), or with
``skip_nonfinite_steps`` drops that update, every process taking the same decision."""

from __future__ import annotations

import os

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from . import guards


class _NonFiniteGuard(TrainerCallback):
    """Checks each update just before the optimizer applies it (after clipping)."""

    def __init__(self, trainer: NonFiniteMixin):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.trainer._guard_update()


class NonFiniteMixin(Trainer):
    """``Trainer`` overrides that check each micro-batch's gradients and each update before the
    optimizer applies it. The subclass calls :meth:`_check_terms` on its loss terms in
    ``compute_loss`` and :meth:`_init_nonfinite` at the end of ``__init__``."""

    def _init_nonfinite(self) -> None:
        self._nonfinite: str | None = None  # what was not finite in the update being accumulated
        self._nonfinite_skipped = 0
        self.add_callback(_NonFiniteGuard(self))

    def _check_terms(self, terms: dict[str, torch.Tensor | None]) -> bool:
        """Whether a loss term is not finite: raises :class:`aihf.NonFiniteError`, or with
        ``skip_nonfinite_steps`` marks the update to be dropped and returns True."""
        bad = guards.nonfinite_terms(terms)
        if not bad:
            return False
        what = ", ".join(f"loss term '{name}' is {guards.describe(terms[name])}" for name in bad)
        if not self.args.skip_nonfinite_steps:
            raise guards.nonfinite_error(f"step {self.state.global_step + 1}", what, self._last_checkpoint())
        self._nonfinite = self._nonfinite or what
        return True

    def training_step(self, *args, **kwargs):
        loss = super().training_step(*args, **kwargs)
        # Checked after each micro-batch's backward, before clipping (which spreads one inf to
        # every gradient) so the message can name the parameter. Under fp16 the GradScaler skips
        # steps with inf gradients itself (it meets them while calibrating its scale); DeepSpeed
        # keeps gradients out of p.grad.
        if self._nonfinite is None and not self.args.fp16 and not self.is_deepspeed_enabled:
            name = guards.nonfinite_gradient(self.model.named_parameters())
            if name is not None:
                self._nonfinite = f"the gradient of '{name}' is not finite"
        return loss

    def _guard_update(self) -> None:
        """Before each optimizer step: stop, or drop the update, if a loss term or a gradient
        was not finite (every process takes the same decision)."""
        reason, self._nonfinite = self._nonfinite, None
        if self.accelerator.num_processes > 1:
            flag = torch.tensor([float(reason is not None)], device=self.accelerator.device)
            if self.accelerator.reduce(flag, reduction="sum").item() > 0 and reason is None:
                reason = "a non-finite value on another process"
        if reason is None:
            return
        where = f"step {self.state.global_step + 1}"
        if not self.args.skip_nonfinite_steps:
            raise guards.nonfinite_error(where, reason, self._last_checkpoint())
        if not self.args.fp16:
            # AdamW leaves parameters without a gradient alone: no update, no moment change.
            self.model.zero_grad(set_to_none=True)
        self._nonfinite_skipped += 1
        if self.is_world_process_zero():
            guards.report_skip(where, reason, self._nonfinite_skipped)

    def _last_checkpoint(self) -> str | None:
        out = self.args.output_dir
        return get_last_checkpoint(out) if os.path.isdir(out) else None

