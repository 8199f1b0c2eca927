"""`aihf train --method ...` beside options it overrides or ignores, as a user types it: a YAML value the
method replaces and a flag the method does not use are each one warning line on stderr (the run goes
on); an option of another method or command says where it belongs; the two-stage methods refuse to
resume in one line that says what to do. stdout carries only the results."""

import dataclasses
import json

import pytest
import yaml

from aihf.cli import main
from aihf.cli import rl as rl_module
from aihf.cli import train as train_module
from aihf.cli.args import train_dataclasses
from aihf.methods import METHODS, RL_METHODS, ignored_options

from .conftest import user_error

RL_METHODS_TEXT = "`aihf train --method aihf_rl|rlhf|rft|sft_then_rlhf`"


@pytest.fixture
def no_training(monkeypatch):
    """`aihf train` runs every start-up check (settings, paths, every data row), then stand-ins load and
    train nothing: what these tests look at is said before training starts."""

    def fit(args, model, ref, tokenizer, sources):
        return train_module.TrainResult({"trained": False}, args.config.output_dir, True, False)

    monkeypatch.setattr(train_module, "load_models", lambda model_args: (None, None))
    monkeypatch.setattr(train_module, "_train", fit)
    monkeypatch.setattr(rl_module, "fit", fit)


def _yaml(workdir, name, rl=False, **changes):
    """conftest's run.yaml with some keys changed (None removes one); for an RL method without max_steps."""
    config = yaml.safe_load((workdir / "run.yaml").read_text())
    if rl:
        config.update({"method": "aihf_rl", "num_rounds": 1, "max_steps": None, "reward_pretrain_steps": 2})
    config.update(changes)
    path = workdir / name
    path.write_text(yaml.safe_dump({k: v for k, v in config.items() if v is not None}))
    return path


def _run(capsys, config, out, *flags):
    """`aihf train --config <config> --output_dir <out> ...flags`, which must succeed: its stderr lines."""
    capsys.readouterr()
    status = main(["train", "--config", str(config), "--output_dir", str(out), *flags])
    captured = capsys.readouterr()
    assert status == 0, captured.err[-2000:]
    # stdout: the metrics (JSON) and where the model went, nothing else
    head, last = captured.out.rsplit("}", 1)
    assert json.loads(head + "}") == {"trained": False}
    assert last.strip() == f"aihf train: final model saved to {out}"
    return [line for line in captured.err.splitlines() if not line.startswith("aihf: ")]  # INFO lines apart


# 1. A --method flag over a value of the YAML file: flags win, in one warning line ---------------------------
@pytest.mark.parametrize(
    "rl, changes, method, expected",
    [
        (
            False,
            {"demo_weight": 0.5},
            "dpo",
            "--method dpo sets demo_weight=0.0 (DPO has no demonstration term), so "
            "demo_weight: 0.5 in {config} is not used",
        ),
        (
            False,
            {"pref_weight": 2.0, "demo_loss": "nll"},
            "sft",
            "--method sft sets pref_weight=0.0 (SFT is the NLL of demonstrations alone (--method spin is its "
            "self-play counterpart)), so pref_weight: 2.0 in {config} is not "
            "used",
        ),
        (
            True,
            {"demo_weight": 0.5},
            "rlhf",
            "--method rlhf sets demo_weight=0.0 (RLHF fits the reward model on the "
            "preferences alone and then freezes it), so demo_weight: 0.5 in {config} is not used",
        ),
    ],
)
def test_method_flag_over_a_yaml_value_warns_in_one_line(workdir, capsys, no_training, rl, changes, method, expected):
    config = _yaml(workdir, "weights.yaml", rl=rl, **changes)
    warnings = _run(capsys, config, workdir / "out", "--method", method)
    assert warnings == ["aihf train: warning: " + expected.format(config=config)]


def test_yaml_value_the_method_agrees_with_passes_quietly(workdir, capsys, no_training):
    config = _yaml(workdir, "agree.yaml", demo_weight=0.0)
    assert _run(capsys, config, workdir / "out", "--method", "dpo") == []


def test_rft_cannot_freeze_the_reward_model_it_does_not_pretrain(workdir, capsys):
    """rft skips the YAML's reward_pretrain_steps; a frozen reward model would then stay untrained."""
    config, out = _yaml(workdir, "rl.yaml", rl=True), workdir / "out"
    argv = ["train", "--config", str(config), "--output_dir", str(out), "--method", "rft"]
    line = user_error(capsys, [*argv, "--freeze_reward_model", "true"], out)
    assert line == (
        "aihf train: --freeze_reward_model True would run RL on an untrained reward model: --method rft skips reward "
        "pretraining (it ignores the preferences)"
    )


# 3. A flag the method does not use: one warning line; the same key in a YAML file passes quietly ----------
@pytest.mark.parametrize(
    "rl, flags, expected",
    [
        (False, ["--method", "sft", "--beta", "0.5"], ["--beta 0.5 is not used by --method sft"]),
        (
            False,
            ["--method", "dpo", "--self_play_round_steps", "2", "--top_k", "5"],
            ["--self_play_round_steps 2 is not used by --method dpo", "--top_k 5 is not used by --method dpo"],
        ),
        (False, ["--temperature", "0.7"], ["--temperature 0.7 is not used by --method aihf"]),  # demo_loss=nll
        (False, ["--temperature", "0.7", "--demo_loss", "self_play"], []),
        (
            False,
            ["--method", "dpo", "--demonstrations", "{dir}/demos.jsonl"],
            ["--demonstrations {dir}/demos.jsonl is not used by --method dpo"],
        ),
        (False, ["--method", "dpo", "--demonstrations", ""], []),  # unsetting what the YAML set: quietly
        (False, ["--method", "spin", "--loss_type", "ipo"], ["--loss_type ipo is not used by --method spin"]),
        (
            True,
            ["--method", "rft", "--reward_pretrain_steps", "0", "--reward_pretrain_patience", "3"],
            ["--reward_pretrain_patience 3 is not used by --method rft"],
        ),
        (True, ["--method", "rlhf", "--reward_clamp", "3"], ["--reward_clamp 3.0 is not used by --method rlhf"]),
        (True, ["--method", "aihf_rl", "--sft_max_steps", "3"], ["--sft_max_steps 3 is not used by --method aihf_rl"]),
    ],
)
def test_a_flag_the_method_ignores_warns_in_one_line(workdir, capsys, no_training, rl, flags, expected):
    config = _yaml(workdir, "run2.yaml", rl=rl)
    warnings = _run(capsys, config, workdir / "out", *(f.format(dir=workdir) for f in flags))
    assert warnings == [f"aihf train: warning: {w.format(dir=workdir)}" for w in expected]


def test_a_yaml_key_the_method_ignores_passes_quietly(workdir, capsys, no_training):
    config = _yaml(workdir, "shared.yaml", beta=0.5, temperature=0.7)  # one file for several methods
    assert _run(capsys, config, workdir / "out", "--method", "sft") == []


def test_warnings_of_a_refused_run_are_not_shown(workdir, capsys):
    """A refused run prints its one error line alone (the warnings come once every check passed)."""
    out = workdir / "out"
    argv = ["train", "--config", str(workdir / "run.yaml"), "--output_dir", str(out), "--method", "sft"]
    line = user_error(capsys, [*argv, "--beta", "0.5", "--demonstrations", str(workdir / "nope.jsonl")], out)
    assert line == f"aihf train: {workdir / 'nope.jsonl'}: file not found"


# 2. An option of another method or command says where it belongs, not a look-alike of this one's -------------
@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["train", "--num_generations", "3"],
            f"unknown option --num_generations: an option of {RL_METHODS_TEXT}, not of `aihf train --method aihf`",
        ),
        (
            ["train", "--method", "dpo", "--num-rounds", "3"],
            f"unknown option --num-rounds: an option of {RL_METHODS_TEXT}, not of `aihf train --method dpo`",
        ),
        (
            ["train", "--method", "aihf_rl", "--precompute_ref_log_probs", "true"],
            "unknown option "
            "--precompute_ref_log_probs: an option of `aihf train --method aihf|dpo|sft|spin|sft_then_dpo`, not of "
            "`aihf train --method aihf_rl`",
        ),
        (
            ["train", "--reward_model", "rm"],
            "unknown option --reward_model: an option of `aihf eval-reward`, not of `aihf train --method aihf`",
        ),
        (
            ["eval-reward", "--output_dir", "o"],
            "unknown option --output_dir: an option of `aihf train`, not of `aihf eval-reward`",
        ),
        (
            ["eval-reward", "--num_generations", "3"],
            "unknown option --num_generations: an option of `aihf train`, not of `aihf eval-reward`",
        ),
    ],
)
def test_an_option_of_another_method_or_command_says_where_it_belongs(workdir, capsys, argv, expected):
    out = workdir / "out"
    if argv[0] == "train":
        argv = [*argv, "--config", str(workdir / "run.yaml"), "--output_dir", str(out)]
    assert user_error(capsys, argv, out) == f"aihf {argv[0]}: {expected}"


def test_a_yaml_key_of_another_method_says_where_it_belongs(workdir, capsys):
    config, out = _yaml(workdir, "rounds.yaml", num_generations=4), workdir / "out"
    line = user_error(capsys, ["train", "--config", str(config), "--output_dir", str(out)], out)
    assert line.endswith(
        f": unknown key 'num_generations': an option of {RL_METHODS_TEXT}, not of `aihf train --method aihf`"
    ), line


# 5. The two-stage methods refuse to resume, in one line that says what to do --------------------------------
@pytest.mark.parametrize("method, rl, second", [("sft_then_dpo", False, "dpo"), ("sft_then_rlhf", True, "rlhf")])
def test_two_stage_methods_refuse_to_resume_and_say_what_to_do(workdir, capsys, method, rl, second):
    config, out = _yaml(workdir, "two.yaml", rl=rl), workdir / "out"
    (out / "sft" / "checkpoint-1").mkdir(parents=True)  # a stage's checkpoint, as an interrupted run leaves
    before = sorted(p.name for p in out.rglob("*"))
    argv = ["train", "--config", str(config), "--output_dir", str(out), "--method", method]
    line = user_error(capsys, [*argv, "--resume_from_checkpoint", "true"])
    assert line == (
        f"aihf train: --method {method} cannot resume (--resume_from_checkpoint true): start it again with "
        f"--overwrite_output_dir true, or run its stages as two commands, each of which resumes: --method sft, then "
        f"--method {second} with --model_name_or_path the SFT model (docs/runs-and-outputs.md)"
    )
    assert sorted(p.name for p in out.rglob("*")) == before


def test_every_option_a_method_ignores_is_one_of_its_options():
    """The table of ignored options names fields of each method's own configuration (a renamed field
    would otherwise leave its flag unwarned, silently)."""
    for method in METHODS + RL_METHODS:
        own = {f.name for dtype in train_dataclasses(method) for f in dataclasses.fields(dtype)}
        for demo_loss in ("nll", "self_play"):
            assert set(ignored_options(method, demo_loss)) <= own, method
