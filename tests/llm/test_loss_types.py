"""Every preference loss type of the table (aihf.losses.PREFERENCE_LOSSES) trains end to end through
AIHFTrainer, and the config checks follow the table. A new loss type = one table entry; this file
then covers it (its exact formula gets its own test in tests/test_losses.py)."""

import pytest
import torch

from aihf import ConfigError
from aihf.losses import PREFERENCE_LOSSES, implicit_preference_loss
from aihf.llm import AIHFConfig

from .helpers import reverse_task, trainer

BETA = 0.5


def _smoothing(spec) -> float:
    return 0.1 if spec.label_smoothing is not None else 0.0


@pytest.mark.learning
@pytest.mark.parametrize("loss_type", list(PREFERENCE_LOSSES))
def test_train_loss_types(tmp_path, loss_type):
    spec = PREFERENCE_LOSSES[loss_type]
    _, prefs = reverse_task(n_prefs=8)  # one batch, seen every step: the margins must grow
    t = trainer(
        tmp_path,
        demos=[],
        prefs=prefs,
        demo_weight=0.0,
        beta=BETA,
        loss_type=loss_type,
        label_smoothing=_smoothing(spec),
        max_steps=12,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
    )
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    t.train()
    logs = [h for h in t.state.log_history if "loss" in h]
    # Step 1 scores the policy before any update: it equals the reference, every log-ratio is 0,
    # and the loss is the table's function at 0 (log 2, 1/(2 beta)^2, 1, ...).
    zero = torch.zeros(1)
    counts = dict(chosen_num_tokens=torch.ones(1), rejected_num_tokens=torch.ones(1))
    smoothing = _smoothing(spec)
    at_zero = implicit_preference_loss(loss_type, zero, zero, zero, zero, BETA, label_smoothing=smoothing, **counts)
    at_zero = at_zero.loss.item()
    assert logs[0]["loss"] == pytest.approx(at_zero, abs=1e-5)
    assert logs[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    # Then it learns the preferences: chosen (the reversal) well above rejected (the copy); measured
    # margins 1.8-3.2 after 12 steps for every type.
    assert logs[-1]["rewards/margins"] > 0.8 and logs[-1]["rewards/accuracies"] >= 0.875
    assert logs[-1]["loss"] < at_zero
    assert any(not torch.equal(p, before[n]) for n, p in t.model.named_parameters())


@pytest.mark.parametrize("loss_type", list(PREFERENCE_LOSSES))
def test_label_smoothing_checks_follow_the_table(tmp_path, loss_type):
    bound = PREFERENCE_LOSSES[loss_type].label_smoothing
    if bound is None:
        with pytest.raises(ConfigError, match=f"no meaning for loss_type '{loss_type}'"):
            AIHFConfig(output_dir=str(tmp_path), loss_type=loss_type, label_smoothing=0.1)
        return
    upper, closed = bound
    assert AIHFConfig(output_dir=str(tmp_path), loss_type=loss_type, label_smoothing=upper / 2).label_smoothing > 0
    for bad in (-0.01, upper + 0.01) + (() if closed else (upper,)):
        with pytest.raises(ConfigError, match=f"label_smoothing must be in .* for loss_type '{loss_type}'"):
            AIHFConfig(output_dir=str(tmp_path), loss_type=loss_type, label_smoothing=bad)


def test_loss_type_help_and_choices_list_the_table():
    from dataclasses import fields

    field = next(f for f in fields(AIHFConfig) if f.name == "loss_type")
    assert field.metadata["choices"] == list(PREFERENCE_LOSSES)
    assert all(f"'{name}' ({spec.description})" in field.metadata["help"] for name, spec in PREFERENCE_LOSSES.items())
