"""A NaN/inf in a loss term, a gradient or a reward: the run stops with one line naming the step and
the term, the last checkpoint intact; or, with skip_nonfinite_steps, the update is dropped and counted."""

import math
import os

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from aihf import NonFiniteError, losses
from aihf.cli import main
from aihf.llm import AIHFRLTrainer
from tests.cli.conftest import train as cli_train
from tests.cli.conftest import workdir  # noqa: F401  (a fixture)
from tests.llm import rl_task
from tests.llm.helpers import losses_by_step, trainer

NAN = float("nan")


def _poison(monkeypatch, name, when):
    """Make ``aihf.losses.<name>`` return a NaN loss while ``when()`` is true."""
    real = getattr(losses, name)

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        if not when():
            return out
        if hasattr(out, "per_example"):
            return out._replace(per_example=out.per_example * NAN, loss=out.loss * NAN)
        return out._replace(loss=out.loss * NAN)

    monkeypatch.setattr(losses, name, poisoned)


class _Weights(TrainerCallback):
    """A copy of one weight after every step."""

    def __init__(self):
        self.after = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.after[state.global_step] = model.model.embed_tokens.weight.detach().clone()


def test_nan_loss_term_stops_the_run_naming_step_and_term_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    t = trainer(tmp_path, max_steps=4, save_strategy="steps", save_steps=1)
    _poison(monkeypatch, "implicit_preference_loss", lambda: t.state.global_step == 2)
    with pytest.raises(NonFiniteError) as e:
        t.train()
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("step 3: loss term 'loss/pref' is nan; stopped before the update")
    out = tmp_path / "out"
    assert f"the last checkpoint, {out / 'checkpoint-2'}, is intact" in message
    assert sorted(os.listdir(out)) == ["checkpoint-1", "checkpoint-2"]  # nothing half-written
    # The update was not applied: the weights are those of checkpoint-2, which resumes cleanly.
    saved = load_file(out / "checkpoint-2" / "model.safetensors")
    assert torch.equal(saved["model.embed_tokens.weight"], t.model.model.embed_tokens.weight.detach())
    monkeypatch.undo()
    resumed = trainer(tmp_path, max_steps=4, save_strategy="steps", save_steps=1)
    resumed.train(resume_from_checkpoint=True)
    assert sorted(losses_by_step(resumed.state.log_history)) == [1, 2, 3, 4]


def test_nan_self_play_term_names_the_demonstration_term(tmp_path, monkeypatch):
    t = trainer(tmp_path, max_steps=2, demo_loss="self_play")
    _poison(monkeypatch, "self_play_loss", lambda: True)
    with pytest.raises(NonFiniteError, match=r"^step 1: loss term 'loss/demo' is nan; .*no checkpoint was written"):
        t.train()


def test_inf_gradient_stops_the_run_naming_the_parameter(tmp_path):
    t = trainer(tmp_path, max_steps=3)
    weight = t.model.model.layers[0].mlp.up_proj.weight
    weight.register_hook(lambda g: g * math.inf if t.state.global_step == 1 else g)
    with pytest.raises(NonFiniteError, match=r"^step 2: the gradient of '.*layers\.0\.mlp\.up_proj\.weight' is not"):
        t.train()


@pytest.mark.parametrize("max_grad_norm", [1.0, 0.0])
def test_skip_nonfinite_steps_drops_the_update_counts_and_logs_it(tmp_path, monkeypatch, capsys, max_grad_norm):
    t = trainer(tmp_path, max_steps=4, skip_nonfinite_steps=True, max_grad_norm=max_grad_norm)
    weights = _Weights()
    t.add_callback(weights)
    _poison(monkeypatch, "demonstration_nll_loss", lambda: t.state.global_step == 1)
    t.train()
    assert t.state.global_step == 4
    assert torch.equal(weights.after[2], weights.after[1])  # step 2 changed nothing
    assert not torch.equal(weights.after[3], weights.after[2])  # and training went on
    logged = [h for h in t.state.log_history if "loss" in h]
    assert [h.get("nonfinite/skipped_steps") for h in logged] == [None, 1, 1, 1]
    assert all(math.isfinite(h["loss"]) for h in logged)
    assert "step 2: loss term 'loss/demo' is nan: update skipped (skip_nonfinite_steps; 1 so far)" in (
        capsys.readouterr().err
    )
    # AdamW kept no trace of the skipped step: its step count is 3, not 4.
    state = next(iter(t.optimizer.state.values()))
    assert int(state["step"]) == 3


def test_skipped_count_survives_resume(tmp_path, monkeypatch):
    t = trainer(tmp_path, max_steps=2, skip_nonfinite_steps=True, save_strategy="steps", save_steps=2)
    _poison(monkeypatch, "demonstration_nll_loss", lambda: t.state.global_step == 0)
    t.train()
    monkeypatch.undo()
    t2 = trainer(tmp_path, max_steps=3, skip_nonfinite_steps=True, save_strategy="steps", save_steps=2)
    t2._fingerprint = t._run_fingerprint()  # same run, one step longer
    t2.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    assert [h.get("nonfinite/skipped_steps") for h in t2.state.log_history if "loss" in h][-1] == 1


def test_cli_prints_the_nonfinite_error_in_one_line_with_status_3(workdir, capsys, monkeypatch):  # noqa: F811
    _poison(monkeypatch, "implicit_preference_loss", lambda: True)
    capsys.readouterr()
    status = cli_train(workdir, workdir / "out")
    err = capsys.readouterr().err
    assert status == 3 and "Traceback" not in err
    # One line of its own, after the progress bar that the failed run left open (now closed).
    assert err.splitlines()[-1].startswith("aihf train: step 1: loss term 'loss/pref' is nan; stopped"), err[-2000:]
    assert main(["train", "--help"]) == 0 and "skip_nonfinite_steps" in capsys.readouterr().out


def test_cli_rl_method_prints_the_nonfinite_error_in_one_line_with_status_3(workdir, capsys, monkeypatch):  # noqa: F811
    _poison(monkeypatch, "bradley_terry_loss", lambda: True)
    flags = ["--method", "aihf_rl", "--max_steps", "-1", "--num_rounds", "2", "--num_generations", "2"]
    status = cli_train(workdir, workdir / "out", *flags)
    err = capsys.readouterr().err
    assert status == 3 and "Traceback" not in err
    line = err.splitlines()[-1]
    assert line.startswith("aihf train: round 1, reward step: 'reward_model/loss_pref' is nan"), err[-2000:]


# ---------------------------------------------------------------------------------------- AIHF-RL
def _rl(tmp_path, **overrides):
    tok = rl_task.tokenizer()
    demos, prefs, _ = rl_task.make_data(n_demos=8, n_prefs=8, n_eval=2)
    base = dict(num_rounds=3, per_device_train_batch_size=4, reward_batch_size=4, save_strategy="steps", save_steps=1)
    base.update(overrides)
    return AIHFRLTrainer(
        rl_task.model(tok),
        args=rl_task.rl_args(tmp_path, **base),
        demonstrations=demos,
        preferences=prefs,
        processing_class=tok,
    )


def test_rl_nan_reward_stops_the_run_naming_round_and_step(tmp_path):
    t = _rl(tmp_path)
    scores = t._scores
    t._scores = lambda p, c: scores(p, c) * (NAN if t.round == 1 else 1.0)
    before = {n: p.detach().clone() for n, p in t.policy.named_parameters()}
    with pytest.raises(NonFiniteError) as e:
        t.train()
    message = str(e.value)
    assert message.startswith("round 2, policy step 2: 'reward' is nan")
    assert f"the last checkpoint, {tmp_path / 'out' / 'checkpoint-1'}, is intact" in message
    assert sorted(os.listdir(tmp_path / "out")) == ["checkpoint-1"]
    saved = load_file(tmp_path / "out" / "checkpoint-1" / "policy.safetensors")
    for name, value in t.policy.named_parameters():
        assert torch.equal(saved[name], value.detach()), name  # the poisoned update was not applied
    assert any(not torch.equal(before[n], p) for n, p in t.policy.named_parameters())


def test_rl_inf_reward_gradient_stops_the_run(tmp_path):
    t = _rl(tmp_path, save_strategy="no")
    t.reward_model.score.weight.register_hook(lambda g: g * math.inf)
    with pytest.raises(NonFiniteError, match=r"^round 1, reward step: the gradient of 'score\.weight' is not finite"):
        t.train()


def test_rl_nan_reward_loss_in_pretraining_names_the_term(tmp_path, monkeypatch):
    t = _rl(tmp_path, save_strategy="no", reward_pretrain_steps=2)
    _poison(monkeypatch, "bradley_terry_loss", lambda: True)
    with pytest.raises(NonFiniteError, match=r"^reward pretraining step 1: 'reward_model/loss_pref' is nan"):
        t.train()


def test_rl_skip_nonfinite_steps_drops_the_update_and_counts_it(tmp_path, capsys):
    t = _rl(tmp_path, save_strategy="no", skip_nonfinite_steps=True)
    scores = t._scores
    t._scores = lambda p, c: scores(p, c) * (math.inf if t.round == 1 and not t.reward_model.training else 1.0)
    policy_before = {}
    run_round = t.run_round

    def spy():
        policy_before[t.round] = {n: p.detach().clone() for n, p in t.policy.named_parameters()}
        return run_round()

    t.run_round = spy
    t.train()
    assert [e.get("nonfinite/skipped_steps") for e in t.log_history] == [None, 1, 1]
    assert "policy/loss" not in t.log_history[1]  # no update, no update metrics
    # Round 2's policy update was dropped: round 3 starts from round 2's weights.
    for name, value in policy_before[1].items():
        assert torch.equal(value, policy_before[2][name]), name
    assert "round 2, policy step 2: 'reward' is " in capsys.readouterr().err
