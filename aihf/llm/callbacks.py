"""``transformers.TrainerCallback`` events for :class:`aihf.llm.AIHFRLTrainer`, which is not a Trainer.

The same callbacks work on both trainers, so that a later move of AIHF-RL onto ``transformers.Trainer``
keeps its users' callbacks: each event gets the trainer's ``args``, a ``transformers.TrainerState``
and a ``TrainerControl``, and the keyword arguments ``model`` (the policy), ``processing_class``,
``optimizer`` and ``lr_scheduler`` (the policy's), as the Trainer passes them. One "step" of
AIHF-RL is one round (``state.global_step`` counts rounds; ``state.max_steps`` is ``num_rounds``).
Only ``on_train_begin``, ``on_step_end`` and ``on_train_end`` are called; ``control.should_training_stop``
set by ``on_step_end`` ends training after that round.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState


class RoundCallbacks:
    """The callbacks of one AIHF-RL trainer and the state they see (rounds as steps)."""

    def __init__(self, callbacks: list[TrainerCallback | type[TrainerCallback]] | None):
        # As the Trainer does: a callback class is instantiated.
        self.callbacks = [cb() if isinstance(cb, type) else cb for cb in callbacks or []]
        for cb in self.callbacks:
            if not isinstance(cb, TrainerCallback):
                raise TypeError(f"callbacks must be transformers.TrainerCallback objects, got {type(cb).__name__}")
        self.state = TrainerState()
        self.control = TrainerControl()

    def call(self, event: str, trainer: Any) -> TrainerControl:
        """Call ``event`` on every callback with ``trainer``'s args, state (its rounds) and policy."""
        self.state.global_step = trainer.round
        self.state.max_steps = trainer.args.num_rounds
        self.state.log_history = trainer.log_history
        self.state.is_world_process_zero = trainer.rank == 0
        for cb in self.callbacks:
            result = getattr(cb, event)(
                trainer.args,
                self.state,
                self.control,
                model=trainer.policy,
                processing_class=trainer.tokenizer,
                optimizer=trainer.policy_optimizer,
                lr_scheduler=trainer.policy_scheduler,
            )
            if result is not None:
                self.control = result
        return self.control
