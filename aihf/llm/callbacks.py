"""The ``transformers`` callback machinery of :class:`aihf.llm.AIHFRLTrainer`.

AIHF-RL calls a ``transformers.trainer_callback.CallbackHandler`` as ``transformers.Trainer`` does, with
the same default callbacks (``DefaultFlowCallback``, which decides when to log and save; the
``report_to`` integrations such as ``TensorBoardCallback``; the progress bar) followed by the user's.
One "step" of AIHF-RL is one round (``state.global_step`` counts rounds; ``state.max_steps`` is the
number of rounds). Events: ``on_init_end``, ``on_train_begin``, ``on_step_begin``, ``on_step_end``,
``on_pre_optimizer_step`` and ``on_optimizer_step`` (around each policy optimizer update), ``on_log``,
``on_evaluate`` (after a round that evaluated the reward model on ``eval_preferences``), ``on_save``,
``on_train_end``; each gets the keyword arguments ``model`` (the policy),
``processing_class``, ``optimizer`` and ``lr_scheduler`` (the policy's). ``control.should_training_stop``
set by ``on_step_end`` ends training after that round.
"""

from __future__ import annotations

import math

from transformers import TrainerCallback, TrainingArguments
from transformers.integrations import get_reporting_integration_callbacks
from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback, ProgressCallback, TrainerState


def rl_callback_handler(
    callbacks: list[TrainerCallback | type[TrainerCallback]] | None,
    args: TrainingArguments,
    model,
    processing_class,
    optimizer,
    lr_scheduler,
) -> CallbackHandler:
    """A ``CallbackHandler`` with the Trainer's default callbacks for ``args`` followed by ``callbacks``
    (classes are instantiated, as the Trainer does). Raises ``TypeError`` for anything that is not a
    ``TrainerCallback`` (object or class)."""
    user = [cb() if isinstance(cb, type) else cb for cb in callbacks or []]
    for cb in user:
        if not isinstance(cb, TrainerCallback):
            raise TypeError(f"callbacks must be transformers.TrainerCallback objects, got {type(cb).__name__}")
    defaults = [DefaultFlowCallback(), *[cls() for cls in get_reporting_integration_callbacks(args.report_to)]]
    if not args.disable_tqdm:
        defaults.append(ProgressCallback())
    return CallbackHandler(defaults + user, model, processing_class, optimizer, lr_scheduler)


def size_state(state: TrainerState, args: TrainingArguments, rounds: int, batch_size: int) -> None:
    """Set ``state``'s step budget and intervals for ``rounds`` rounds, as the Trainer does for its steps
    (an interval below 1 is a fraction of the rounds, rounded up)."""
    state.max_steps = rounds
    state.train_batch_size = batch_size
    state.logging_steps = round_interval(args.logging_steps, rounds)
    state.save_steps = round_interval(args.save_steps, rounds)
    state.eval_steps = round_interval(args.eval_steps, rounds)


def round_interval(value: float | None, rounds: int) -> int:
    """A ``logging_steps``/``save_steps``/``eval_steps`` value in rounds: a value below 1 is that fraction
    of ``rounds`` (rounded up), as the Trainer reads it; at least 1."""
    if value is None:
        return 1
    return max(1, math.ceil(rounds * value) if value < 1 else int(value))
