"""AIHFRLTrainer calls ``transformers.TrainerCallback`` events with rounds as steps, as a Trainer would."""

import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from aihf.llm.rl_trainer import AIHFRLTrainer

from . import rl_task
from .rl_task import rl_args


class Recorder(TrainerCallback):
    def __init__(self, stop_at=None):
        self.events, self.stop_at, self.weights = [], stop_at, []

    def on_train_begin(self, args, state, control, **kw):
        self.events.append(("begin", state.global_step, state.max_steps))
        self.seen = kw

    def on_step_end(self, args, state, control, model=None, **kw):
        self.events.append(("step", state.global_step, state.max_steps))
        self.weights.append(next(model.parameters()).detach().clone())
        assert isinstance(args, TrainingArguments)
        if state.global_step == self.stop_at:
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kw):
        self.events.append(("end", state.global_step, state.max_steps))


def _trainer(tmp_path, callbacks, rounds=3):
    tok = rl_task.tokenizer()
    demos = [{"prompt": f"say : {t}", "completion": " g1 g2"} for t in rl_task.TOPICS]
    return AIHFRLTrainer(
        rl_task.model(tok),
        args=rl_args(tmp_path, num_rounds=rounds, per_device_train_batch_size=2, pref_weight=0.0),
        demonstrations=demos,
        processing_class=tok,
        callbacks=callbacks,
    )


def test_callbacks_fire_per_round_with_the_policy_and_can_stop_training(tmp_path):
    rec = Recorder()
    t = _trainer(tmp_path / "a", [rec])
    t.train()
    assert rec.events == [("begin", 0, 3), ("step", 1, 3), ("step", 2, 3), ("step", 3, 3), ("end", 3, 3)]
    assert rec.seen["model"] is t.policy and rec.seen["processing_class"] is t.tokenizer
    assert rec.seen["optimizer"] is t.policy_optimizer
    # on_step_end sees the policy after each round's update: the weights move between rounds.
    assert not torch.equal(rec.weights[0], rec.weights[-1])
    assert torch.equal(rec.weights[-1], next(t.policy.parameters()))

    stop = Recorder(stop_at=2)
    t = _trainer(tmp_path / "b", [stop], rounds=5)
    t.train()
    assert t.round == 2 and [e[:2] for e in stop.events] == [("begin", 0), ("step", 1), ("step", 2), ("end", 2)]


def test_callback_classes_are_instantiated_and_other_objects_refused(tmp_path):
    t = _trainer(tmp_path / "a", [Recorder])
    # After the Trainer's default callbacks (flow, integrations), as in transformers.Trainer.
    assert isinstance(t.callback_handler.callbacks[-1], Recorder)
    with pytest.raises(TypeError, match="TrainerCallback"):
        _trainer(tmp_path / "b", [object()])
