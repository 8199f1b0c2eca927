"""Reliability of the control loop: SIGKILL and exact resume, non-finite guards, untrusted
checkpoint files, determinism (docs/reliability.md).

Killed runs are forked child processes of the test (torch, gymnasium and SB3 are imported
already, so a child starts at once); the kill is a real SIGKILL, sent by the child to itself at a
chosen point or by the parent after a random delay. The kill points come from a seeded RNG and
are printed (``pytest -s``).
"""

import json
import math
import multiprocessing
import os
import pickle
import random
import signal
import sys
import traceback

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

from safetensors.torch import load_file, save_file  # noqa: E402

import aihf.control.trainer as trainer_module  # noqa: E402
from aihf import ConfigError, NonFiniteError  # noqa: E402
from aihf.control import cli  # noqa: E402
from aihf.control.reward import RewardNet  # noqa: E402
from aihf.control.trainer import ControlTrainer  # noqa: E402

from .helpers import ENV, pendulum_config  # noqa: E402

FORK = multiprocessing.get_context("fork")
STEPS = 300  # SAC env steps per round
ROUNDS = 4


def _config(data_dir, out, **kw):
    settings = dict(
        method="aihf",
        num_demonstrations=1,
        rounds=ROUNDS,
        sac_steps_per_round=STEPS,
        learning_starts=100,
        reward_batch_size=32,
        reward_steps_per_round=4,
        reward_pretrain_steps=5,
    )
    return pendulum_config(data_dir, out, **{**settings, **kw})


def _weights(t: ControlTrainer) -> dict:
    """Everything a run learns: SAC's actor, critics, target critics, entropy coefficient; the reward net."""
    w = {f"sac.{k}": v for k, v in t.model.policy.state_dict().items()}
    w["sac.log_ent_coef"] = t.model.log_ent_coef.detach()
    w.update({f"reward.{k}": v for k, v in t.reward_net.state_dict().items()})
    return {k: v.detach().clone().contiguous() for k, v in w.items()}


def _comparable(result: dict) -> dict:
    """A result without wall-clock timings and paths."""
    out = {k: v for k, v in result.items() if k not in ("timing", "config")}
    out["config"] = {k: v for k, v in result["config"].items() if k not in ("output_dir", "result_file")}
    return out


# ----------------------------------------------------------------------------- kill and resume
def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _child(config, kill, result):
    """Run ``config`` (resuming if it can), SIGKILLed at ``kill`` = (where, round) if given."""
    try:
        torch.set_num_threads(1)
        where, n = kill or (None, 0)
        trainer = ControlTrainer(config)
        build = trainer._build

        def build_with_kill_point():
            build()
            sac_train = trainer.model.train
            if where == "sac":  # halfway through round n's SAC phase, inside a gradient step
                half = (n - 1) * STEPS + STEPS // 2

                def train(*args, **kwargs):
                    if trainer.model.num_timesteps >= half:
                        _die()
                    return sac_train(*args, **kwargs)

                trainer.model.train = train

        trainer._build = build_with_kill_point
        if where == "reward":  # as round n's reward steps start
            steps = trainer._reward_steps
            trainer._reward_steps = lambda *a, **kw: (
                _die() if trainer.round == n - 1 and a[0] == config.reward_steps_per_round else steps(*a, **kw)
            )
        elif where == "save":  # round n's checkpoint: state.pt written, buffer.npz half-way
            savez = np.savez
            trainer_module.np.savez = lambda path, **arrays: (
                (savez(path, **dict(list(arrays.items())[:2])), _die()) if trainer.round == n - 1 else None,
                savez(path, **arrays),
            )
        elif where == "swap":  # round n's checkpoint complete; the old one moved aside, the new not in place
            replace = os.replace
            trainer_module.os.replace = lambda src, dst: (
                _die() if str(src).endswith("checkpoint.tmp") and trainer.round == n - 1 else None,
                replace(src, dst),
            )
        out = trainer.train()
        save_file(_weights(trainer), result + ".safetensors")
        with open(result + ".json.tmp", "w") as f:
            json.dump(out, f)
        os.replace(result + ".json.tmp", result + ".json")
        code = 0
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _launch(config, kill, result, kill_after=None):
    p = FORK.Process(target=_child, args=(config, kill, str(result)))
    p.start()
    if kill_after is not None:
        p.join(kill_after)
        if p.exitcode is None:
            os.kill(p.pid, signal.SIGKILL)
    p.join(300)
    assert p.exitcode is not None, "the run hung"
    assert p.exitcode in (0, -signal.SIGKILL), f"the run failed (exit {p.exitcode})"
    return p.exitcode


def _assert_checkpoint_complete(out):
    ckpt = out / "checkpoint"
    if ckpt.is_dir() or (out / "checkpoint.old").is_dir():
        folder = ckpt if ckpt.is_dir() else out / "checkpoint.old"
        assert sorted(os.listdir(folder)) == ["buffer.npz", "meta.json", "state.pt"], sorted(os.listdir(folder))


def test_control_run_survives_sigkill_and_resumes_exactly(data_dir, tmp_path):
    """Kills inside a SAC gradient step, inside a reward step, half-way through writing a
    checkpoint's replay buffer, between the checkpoint's two renames, and at a random moment from
    outside; after each, the run resumes from its last complete checkpoint. It ends with the same
    result (every evaluation, loss and counter) and bit-identical SAC and reward weights as a run
    never stopped."""
    config = _config(data_dir, tmp_path / "reference_run")
    assert _launch(config, None, tmp_path / "reference") == 0
    reference = json.load(open(tmp_path / "reference.json"))
    reference_weights = load_file(tmp_path / "reference.safetensors")

    rng = random.Random(12)
    points = [("sac", rng.randint(1, 2)), ("save", rng.randint(2, 3)), ("reward", 3), ("swap", 4)]
    print(f"control: kill points {points}")
    out = tmp_path / "killed_run"
    config = _config(data_dir, out)
    for kill in points:
        assert _launch(config, kill, tmp_path / "killed") == -signal.SIGKILL, f"{kill} was not reached"
        _assert_checkpoint_complete(out)
    _launch(config, None, tmp_path / "killed", kill_after=rng.uniform(0.1, 1.0))
    while not (tmp_path / "killed.json").exists():
        assert _launch(config, None, tmp_path / "killed") == 0
    resumed = json.load(open(tmp_path / "killed.json"))
    assert _comparable(resumed) == _comparable(reference)
    assert [h["round"] for h in resumed["history"]] == list(range(1, ROUNDS + 1))
    weights = load_file(tmp_path / "killed.safetensors")
    assert weights.keys() == reference_weights.keys()
    for k, v in reference_weights.items():
        assert torch.equal(weights[k], v), k
    assert sorted(os.listdir(out)) == ["checkpoint", "policy.safetensors", "result.json", "reward.safetensors"]


def test_every_round_starts_from_a_reset_seeded_by_seed_and_round(data_dir, tmp_path):
    """The first observation of each round's SAC phase is the env's reset with the (seed, round)
    seed, whatever the episode in progress was."""
    import gymnasium as gym

    steps = 150  # Pendulum episodes last 200 steps: round 2 starts mid-episode
    t = ControlTrainer(_config(data_dir, tmp_path, rounds=2, sac_steps_per_round=steps, reward_steps_per_round=1))
    t.train()
    buf = t.model.replay_buffer
    env = gym.make(ENV)
    for r in range(2):
        first, _ = env.reset(seed=trainer_module._episode_seed(t.config.seed, r))
        np.testing.assert_array_equal(buf.observations[r * steps, 0], first)
    assert not buf.dones[steps - 1, 0]  # the cut episode's last transition is not terminal


def test_same_seed_gives_the_same_control_run_twice(data_dir, tmp_path):
    """Two runs with the same seed in one process (the global RNGs disturbed in between) give the
    same metrics and weights; another seed gives other ones."""
    first = ControlTrainer(_config(data_dir, tmp_path / "a", rounds=2))
    a = first.train()
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    second = ControlTrainer(_config(data_dir, tmp_path / "b", rounds=2))
    b = second.train()
    assert _comparable(a) == _comparable(b)
    wa, wb = _weights(first), _weights(second)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    other = ControlTrainer(_config(data_dir, tmp_path / "c", rounds=1, seed=1))
    other.train()
    assert not torch.equal(_weights(other)["reward.mlp.0.weight"], wa["reward.mlp.0.weight"])


# ----------------------------------------------------------------------------- non-finite values
def _checkpoint_files(out):
    return {n: (out / "checkpoint" / n).read_bytes() for n in os.listdir(out / "checkpoint")}


def _poison_after_round_1(monkeypatch, trainer_cls_attr, make_poisoned):
    """Replace ``ControlTrainer.<attr>`` by ``make_poisoned(original, trainer)`` from round 2 on."""
    original = getattr(ControlTrainer, trainer_cls_attr)

    def patched(self, *args, **kwargs):
        if self.round >= 1:
            return make_poisoned(original, self)(*args, **kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ControlTrainer, trainer_cls_attr, patched)


def _nan_demo_batch(original, trainer):
    def batch(*args):
        b = original(trainer, *args)
        if b.demo_obs is not None:
            b.demo_obs[0, 0] = float("nan")
        return b

    return batch


def test_nan_reward_loss_term_stops_the_run_naming_round_step_and_term(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _poison_after_round_1(monkeypatch, "_reward_batch", _nan_demo_batch)
    trainer = ControlTrainer(_config(data_dir, out, rounds=3))
    with pytest.raises(NonFiniteError) as e:
        trainer.train()
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"round 2, reward step 1, env step {2 * STEPS}: loss/demo is nan")
    assert "the last checkpoint" in message and "skip_nonfinite_steps" in message
    with open(out / "checkpoint" / "meta.json") as f:
        assert json.load(f)["round"] == 1  # round 1's checkpoint, untouched
    assert not (out / "result.json").exists()
    # The checkpoint left behind resumes (here with the poison gone).
    monkeypatch.undo()
    result = ControlTrainer(_config(data_dir, out, rounds=3)).train()
    assert [h["round"] for h in result["history"]] == [1, 2, 3]


def test_inf_reward_gradient_stops_the_run_naming_the_parameter(data_dir, tmp_path, monkeypatch):
    def poisoned(original, trainer):
        def steps(*args, **kwargs):
            handle = trainer.reward_net.mlp[0].weight.register_hook(lambda g: g * float("inf"))
            try:
                return original(trainer, *args, **kwargs)
            finally:
                handle.remove()

        return steps

    _poison_after_round_1(monkeypatch, "_reward_steps", poisoned)
    with pytest.raises(
        NonFiniteError,
        match=r"^round 2, reward step 1, env step \d+: the gradient of reward "
        r"parameter mlp\.0\.weight is (-?inf|nan)",
    ):
        ControlTrainer(_config(data_dir, tmp_path / "run", rounds=3)).train()


def test_nan_learned_reward_fed_to_sac_stops_the_run(data_dir, tmp_path, monkeypatch):
    forward = RewardNet.forward

    def forward_nan_when_relabelling(self, obs, act=None):
        out = forward(self, obs, act)
        # SAC's minibatches are relabelled under no_grad; the reward steps need gradients.
        return out * float("nan") if not torch.is_grad_enabled() and trainer.round >= 1 else out

    monkeypatch.setattr(RewardNet, "forward", forward_nan_when_relabelling)
    out = tmp_path / "run"
    trainer = ControlTrainer(_config(data_dir, out, rounds=3))
    expected = r"^round 2, SAC minibatch, env step \d+: the learned reward fed to SAC is nan"
    with pytest.raises(NonFiniteError, match=expected):
        trainer.train()
    with open(out / "checkpoint" / "meta.json") as f:
        assert json.load(f)["round"] == 1


@pytest.mark.parametrize(
    "field, message",
    [
        ("dones", "SAC's critic_loss is nan"),  # a NaN target: the critic's loss
        # torch's check of the distribution comes first, unless torch._dynamo was initialised in this
        # process (it turns that check off for good, e.g. after a compiled generation): then the critic's.
        ("next_observations", "(SAC's action distribution has non-finite parameters|SAC's critic_loss is nan)"),
    ],
)
def test_nan_sac_loss_stops_the_run_and_keeps_the_checkpoint(data_dir, tmp_path, monkeypatch, field, message):
    def poisoned_build(build):
        def run(self):
            build(self)
            get = self.model.replay_buffer._get_samples

            def samples(*args, **kwargs):
                s = get(*args, **kwargs)
                if self.round >= 1:
                    s = s._replace(**{field: getattr(s, field) * float("nan")})
                return s

            self.model.replay_buffer._get_samples = samples

        return run

    monkeypatch.setattr(ControlTrainer, "_build", poisoned_build(ControlTrainer._build))
    out = tmp_path / "run"
    trainer = ControlTrainer(_config(data_dir, out, rounds=3))
    before = None
    original_save = ControlTrainer._save_checkpoint

    def save_and_remember(self, *args):
        nonlocal before
        original_save(self, *args)
        before = _checkpoint_files(out)

    monkeypatch.setattr(ControlTrainer, "_save_checkpoint", save_and_remember)
    with pytest.raises(NonFiniteError, match=rf"^round 2, SAC update, env step \d+: {message}"):
        trainer.train()
    assert _checkpoint_files(out) == before  # the last good checkpoint, byte for byte


def test_skip_nonfinite_steps_drops_reward_steps_counts_and_logs_them(data_dir, tmp_path, monkeypatch, capsys):
    _poison_after_round_1(monkeypatch, "_reward_batch", _nan_demo_batch)
    trainer = ControlTrainer(_config(data_dir, tmp_path / "run", rounds=3, skip_nonfinite_steps=True))
    before = {}
    steps = ControlTrainer._reward_steps

    def remember(self, *args, **kwargs):
        if self.round == 1:
            before.update({k: v.clone() for k, v in self.reward_net.state_dict().items()})
            before["adam_step"] = self.reward_optimizer.state_dict()["state"][0]["step"].clone()
        return steps(self, *args, **kwargs)

    monkeypatch.setattr(ControlTrainer, "_reward_steps", remember)
    result = trainer.train()
    per_round = trainer.config.reward_steps_per_round
    assert result["history"][0].get("nonfinite/skipped_steps") is None
    assert [h["nonfinite/skipped_steps"] for h in result["history"][1:]] == [per_round, 2 * per_round]
    lines = [line for line in capsys.readouterr().err.splitlines() if "update skipped" in line]
    assert len(lines) == 2 * per_round
    assert lines[0].startswith(f"aihf: round 2, reward step 1, env step {2 * STEPS}: loss/demo is nan: update skipped")
    assert lines[-1].endswith(f"; {2 * per_round} so far)")
    assert all(math.isfinite(v) for h in result["history"] for k, v in h.items() if k.startswith("return"))
    # Round 2's skipped steps changed no reward weight and no optimizer state.
    with open(tmp_path / "run" / "checkpoint" / "meta.json") as f:
        assert json.load(f)["nonfinite_skipped"] == 2 * per_round
    for k, v in trainer.reward_net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(trainer.reward_optimizer.state_dict()["state"][0]["step"], before["adam_step"])


def test_cli_prints_the_nonfinite_error_in_one_line_with_status_3(data_dir, tmp_path, monkeypatch, capsys):
    _poison_after_round_1(monkeypatch, "_reward_batch", _nan_demo_batch)
    c = _config(data_dir, tmp_path / "run", rounds=2)
    argv = ["train", "--env_id", ENV, "--progress", "false"]
    for name in (
        "demonstrations",
        "preferences",
        "output_dir",
        "rounds",
        "sac_steps_per_round",
        "learning_starts",
        "net_arch",
        "batch_size",
        "reward_net_arch",
        "reward_batch_size",
        "eval_episodes",
    ):
        argv += [f"--{name}", str(getattr(c, name))]
    assert cli.main(argv) == 3
    # The run had started (the survival-bonus line said so); the error is one line.
    started, err = capsys.readouterr().err.strip().splitlines()
    assert started.startswith("aihf control train: survival bonus on")
    assert err.startswith(f"aihf control train: round 2, reward step 1, env step {2 * STEPS}: loss/demo is nan")


# ----------------------------------------------------------------------------- untrusted files
class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("target", ["state.pt", "buffer.npz"])
def test_resume_refuses_a_pickle_that_would_run_code(data_dir, tmp_path, monkeypatch, target):
    out = tmp_path / "run"
    ControlTrainer(_config(data_dir, out, rounds=1)).train()
    monkeypatch.chdir(tmp_path)
    path = out / "checkpoint" / target
    if target == "state.pt":
        torch.save({"policy": _Boom()}, path)  # torch.save pickles
    else:
        np.savez(path, observations=np.array([_Boom()], dtype=object))  # an object array pickles too
    assert pickle.dumps(_Boom())  # the payload is a real pickle that would run `touch PWNED`
    with pytest.raises(ConfigError, match=rf"checkpoint/{target}: refused to load"):
        ControlTrainer(_config(data_dir, out, rounds=2)).train()
    assert not (tmp_path / "PWNED").exists()


def test_resume_refuses_a_tampered_meta_file(data_dir, tmp_path):
    out = tmp_path / "run"
    ControlTrainer(_config(data_dir, out, rounds=1)).train()
    meta_path = out / "checkpoint" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["round"] = "../../elsewhere"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="'round' must be an integer >= 0"):
        ControlTrainer(_config(data_dir, out, rounds=2)).train()


def test_control_package_never_unpickles():
    """Audit of aihf/control: every torch.load has weights_only=True, every np.load has
    allow_pickle=False, and no pickle or SB3 .load (which unpickles) is used."""
    import pathlib
    import re

    root = pathlib.Path(trainer_module.__file__).parent
    for path in root.glob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, (path, line)
            if "np.load(" in line:
                assert "allow_pickle=False" in line, (path, line)
        assert "import pickle" not in text and "pickle.load" not in text, path
        assert not re.search(r"SAC\.load|\.load_replay_buffer|load_from_zip_file", text), path
