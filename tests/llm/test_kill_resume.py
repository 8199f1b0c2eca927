"""Runs killed with SIGKILL (during a step, a checkpoint write, or self-play / RL generation, and at
a random moment from outside) resume from their last complete checkpoint and end with the same
per-step metrics and final weights as an uninterrupted run.

Each run is a forked child process (the parent has already imported torch and transformers, so
a child starts in milliseconds); the kill is a real SIGKILL, sent by the child to itself at the
chosen point or by the parent after a random delay. The kill points are drawn from a seeded RNG,
printed, and differ between the trainers.
"""

import json
import multiprocessing
import os
import random
import signal
import sys
import traceback
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

import aihf.llm.rl_checkpoint as rl_checkpoint_module  # where AIHF-RL writes its checkpoint files
from aihf.llm import AIHFRLTrainer
from aihf.llm import runs as runs_module
from tests.llm import rl_task
from tests.llm.helpers import reverse_task, trainer

pytestmark = pytest.mark.slow
FORK = multiprocessing.get_context("fork")
TIME_KEYS = ("runtime", "per_second", "total_flos", "train_loss", "time/")


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_when(fn, condition):
    """``fn`` that SIGKILLs the process when called while ``condition(*args)`` holds."""

    def wrapped(*args, **kwargs):
        if condition(*args):
            _die()
        return fn(*args, **kwargs)

    return wrapped


class _KillAtStep(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            _die()


def _has_checkpoint(out):
    return os.path.isdir(out) and any(n.startswith("checkpoint-") for n in os.listdir(out))


def _implicit(out, kill, demo_loss):
    demos, prefs = reverse_task(n_demos=16, n_prefs=16)
    resume = _has_checkpoint(out / "out")
    t = trainer(
        out,
        demos=demos,
        prefs=prefs,
        max_steps=6,
        save_strategy="steps",
        save_steps=1,
        save_total_limit=2,
        demo_loss=demo_loss,
        self_play_round_steps=2,
        overwrite_output_dir=not resume,
    )
    where, n = kill or (None, 0)
    at_step = lambda *args: t.state.global_step == n  # noqa: E731
    if where == "generate":  # during step n + 1
        t.generator = _kill_when(t.generator, at_step)
    elif where == "save":  # checkpoint-n's files are staged; it is not renamed into place yet
        runs_module.write_fingerprint = _kill_when(runs_module.write_fingerprint, at_step)
    elif where == "step":
        t.add_callback(_KillAtStep(n))
    t.train(resume_from_checkpoint=True if resume else None)
    history = [h for h in t.state.log_history if "loss" in h]
    return history, {k: v.detach().contiguous() for k, v in t.model.state_dict().items()}


def _rl(out, kill):
    tok = rl_task.tokenizer()
    demos, prefs, eval_prefs = rl_task.make_data(n_demos=8, n_prefs=8, n_eval=4)
    args = rl_task.rl_args(
        out,
        num_rounds=5,
        per_device_train_batch_size=2,
        reward_batch_size=4,
        num_ppo_epochs=2,
        reward_pretrain_steps=2,
        save_strategy="steps",
        save_steps=1,
        save_total_limit=2,
    )
    t = AIHFRLTrainer(
        rl_task.model(tok),
        args=args,
        demonstrations=demos,
        preferences=prefs,
        eval_preferences=eval_prefs,
        processing_class=tok,
    )
    where, n = kill or (None, 0)
    if where == "generate":  # round n + 1's first samples
        t.generator = _kill_when(t.generator, lambda *args: t.round == n)
    elif where == "save":  # checkpoint-n: the policy's weights are staged, the reward model's not yet
        rl_checkpoint_module.save_file = _kill_when(
            rl_checkpoint_module.save_file, lambda tensors, path: t.round == n and "reward" in path
        )
    elif where == "step":  # as round n + 1 starts
        t.run_round = _kill_when(t.run_round, lambda: t.round == n)
    t.train(resume_from_checkpoint=True if t._checkpoint_dirs() else None)
    weights = {f"policy.{k}": v for k, v in t.policy.state_dict().items()}
    weights.update({f"reward.{k}": v for k, v in t.reward_model.state_dict().items()})
    return t.log_history, {k: v.detach().contiguous() for k, v in weights.items()}


def _child(kind, out, kill, result):
    try:
        torch.set_num_threads(1)
        history, weights = _rl(Path(out), kill) if kind == "rl" else _implicit(Path(out), kill, kind)
        save_file(weights, result + ".safetensors")
        with open(result + ".json.tmp", "w") as f:
            json.dump(history, f)
        os.replace(result + ".json.tmp", result + ".json")  # the outside kill may land here too
        code = 0
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _launch(kind, out, kill, result, kill_after=None):
    p = FORK.Process(target=_child, args=(kind, str(out), kill, str(result)))
    p.start()
    if kill_after is not None:
        p.join(kill_after)
        if p.exitcode is None:
            os.kill(p.pid, signal.SIGKILL)
    p.join(300)
    assert p.exitcode is not None, "the run hung"
    assert p.exitcode in (0, -signal.SIGKILL), f"the run failed (exit {p.exitcode})"
    return p.exitcode


def _comparable(history):
    return [{k: v for k, v in h.items() if not any(t in k for t in TIME_KEYS)} for h in history]


def _run_with_kills(tmp_path, kind, points, seed):
    rng = random.Random(seed)
    kills, last = [], 0
    for where, (lo, hi) in points:  # increasing, so that each is reached after the resume before it
        last = rng.randint(max(lo, last + 1), hi)
        kills.append((where, last))
    print(f"{kind}: kill points {kills}")
    result = tmp_path / "killed"
    out = tmp_path / "killed_run"
    for kill in kills:
        assert _launch(kind, out, kill, result) == -signal.SIGKILL, f"{kill} was not reached"
        complete = "rl_state.json" if kind == "rl" else "aihf_run.json"  # each checkpoint's last file
        folder = out / "out"
        for name in os.listdir(folder) if folder.is_dir() else []:
            assert not name.startswith("checkpoint-") or os.path.isfile(folder / name / complete), name
    # One more from outside, at a random moment (it may also land after the run is done).
    _launch(kind, out, None, result, kill_after=rng.uniform(0.2, 1.5))
    while not os.path.exists(str(result) + ".json"):
        _launch(kind, out, None, result)
    return json.load(open(str(result) + ".json")), load_file(str(result) + ".safetensors")


def _reference(tmp_path, kind):
    result = tmp_path / "reference"
    assert _launch(kind, tmp_path / "reference_run", None, result) == 0
    return json.load(open(str(result) + ".json")), load_file(str(result) + ".safetensors")


def _assert_same(reference, resumed):
    (ref_history, ref_weights), (history, weights) = reference, resumed
    history, ref_history = _comparable(history), _comparable(ref_history)
    assert len(history) == len(ref_history)
    for got, expected in zip(history, ref_history):
        differ = {
            k: (got.get(k), expected.get(k)) for k in got.keys() | expected.keys() if got.get(k) != expected.get(k)
        }
        assert not differ, f"step {expected.get('step')}: {differ}"
    assert ref_weights.keys() == weights.keys()
    for name, value in ref_weights.items():
        assert torch.equal(value, weights[name]), name


@pytest.mark.parametrize(
    "kind, points",
    [
        ("nll", [("save", (1, 3)), ("step", (2, 5))]),
        ("self_play", [("generate", (1, 3)), ("save", (2, 4)), ("step", (3, 5))]),
    ],
)
def test_implicit_trainer_survives_sigkill(tmp_path, kind, points):
    reference = _reference(tmp_path, kind)
    resumed = _run_with_kills(tmp_path, kind, points, seed=len(kind))
    _assert_same(reference, resumed)
    out = tmp_path / "killed_run" / "out"
    assert sorted(os.listdir(out))[:2] == ["checkpoint-5", "checkpoint-6"]  # save_total_limit=2 held throughout


def test_aihf_rl_survives_sigkill(tmp_path):
    points = [("generate", (0, 1)), ("save", (1, 3)), ("step", (2, 4))]
    reference = _reference(tmp_path, "rl")
    resumed = _run_with_kills(tmp_path, "rl", points, seed=3)
    _assert_same(reference, resumed)
    names = sorted(n for n in os.listdir(tmp_path / "killed_run" / "out") if n.startswith("checkpoint-"))
    assert names == ["checkpoint-4", "checkpoint-5"]
