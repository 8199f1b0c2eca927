"""What a new user hit on a first try of the CLI, each as the command line they typed: flags an RL
method would ignore, a used folder under `aihf quickstart`, no --output_dir, multi-line usage and
no "did you mean" outside `aihf train`, a mistyped model folder read as a Hub id, and an INFO line
printed before the run was refused."""

import subprocess
import sys

import pytest
import yaml

import aihf.tasks.quickstart as quickstart
from aihf.cli import main
from aihf.cli import rl as rl_cli
from aihf.cli.args import parse_train_args
from aihf.data import special_tokens

from .conftest import train, user_error


def _yaml(workdir, **changes):
    """conftest's run.yaml with some keys changed (None removes a key)."""
    config = yaml.safe_load((workdir / "run.yaml").read_text())
    config.update(changes)
    path = workdir / "changed.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in config.items() if v is not None}))
    return path


# 1. RL methods train in rounds: max_steps / num_train_epochs would be ignored -------------------------
def test_rl_methods_refuse_max_steps_and_point_to_num_rounds(workdir, capsys):
    out = workdir / "out"
    config = _yaml(workdir, method="rft", num_rounds=1)  # run.yaml sets max_steps: 2
    line = user_error(capsys, ["train", "--config", str(config), "--output_dir", str(out)], out)
    assert line == (
        f"aihf train: max_steps: 2 in {config}: --method rft trains in rounds, not in steps or epochs: set "
        "num_rounds (each round: policy_steps_per_round policy steps, then reward_steps_per_round reward steps)"
    )
    config = _yaml(workdir, method="aihf_rl", max_steps=None)
    line = user_error(
        capsys, ["train", "--config", str(config), "--output_dir", str(out), "--num_train_epochs", "3"], out
    )
    assert line.startswith("aihf train: --num_train_epochs 3.0: --method aihf_rl trains in rounds"), line
    assert "set num_rounds" in line
    # --max_steps -1 (transformers' "not set") over a YAML shared with the other methods is fine.
    flags = ["--output_dir", str(out), "--max_steps", "-1"]
    args = parse_train_args(["--config", str(_yaml(workdir, method="rft")), *flags])
    rl_cli.check_settings(args)
    # Under sft_then_rlhf max_steps sizes the SFT stage (its help says so): accepted.
    config = _yaml(workdir, method="sft_then_rlhf", reward_pretrain_steps=2)
    args = parse_train_args(["--config", str(config), "--output_dir", str(out)])
    rl_cli.check_settings(args)
    assert args.config.max_steps == 2


# 2. aihf quickstart refuses a folder that holds another run ------------------------------------------
class _Checked(Exception):
    """Raised in place of building the task: every start-up check passed."""


def test_quickstart_refuses_a_folder_holding_another_run(workdir, capsys, monkeypatch):
    used = workdir / "used"
    assert train(workdir, used) == 0  # a finished `aihf train` run
    before = sorted(p.name for p in used.iterdir())
    line = user_error(capsys, ["quickstart", "--output_dir", str(used)])
    assert line.startswith(f"aihf quickstart: output_dir {used} already holds another run (model.safetensors"), line
    assert line.endswith("choose another --output_dir, or add --overwrite_output_dir to write the quickstart into it")
    assert sorted(p.name for p in used.iterdir()) == before  # nothing written

    def checked(*args, **kwargs):
        raise _Checked

    monkeypatch.setattr(quickstart, "make_task", checked)
    with pytest.raises(_Checked):
        main(["quickstart", "--output_dir", str(used), "--overwrite_output_dir"])
    # A previous quickstart's own files (its models sit in subfolders) are replaced, as before.
    previous = workdir / "qs"
    (previous / "model").mkdir(parents=True)
    (previous / "model" / "model.safetensors").write_bytes(b"")
    (previous / "results.json").write_text("{}")
    with pytest.raises(_Checked):
        main(["quickstart", "--output_dir", str(previous)])


# 3. aihf train without --output_dir -------------------------------------------------------------------
def test_train_requires_output_dir(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    line = user_error(capsys, ["train", "--config", str(workdir / "run.yaml")])
    assert line == (
        "aihf train: output_dir is required: the folder for the model and its checkpoints, in the --config file or "
        "as --output_dir"
    )
    assert not (workdir / "trainer_output").exists()
    # In the YAML file it counts as given.
    args = parse_train_args(["--config", str(_yaml(workdir, output_dir=str(workdir / "o")))])
    assert args.config.output_dir == str(workdir / "o")


# 4, 5. One line and "did you mean" for a mistyped flag, whichever the command --------------------------
@pytest.mark.parametrize(
    "argv, typo, meant",
    [
        (["train", "--model_name_or_path", "m"], "--max_step", "--max_steps"),
        (["eval-reward"], "--reward_modl", "--reward_model"),
        (["quickstart"], "--num_demonstration", "--num_demonstrations"),
        (["bench", "llm"], "--presett", "--preset"),
        (["control", "train"], "--rond", "--rounds"),
        (["control", "collect"], "--env", "--env_id"),
        (["control", "eval", "--run_dir", "r"], "--episods", "--episodes"),
        (["control", "bench"], "--jbos", "--jobs"),
    ],
)
def test_mistyped_flags_are_one_line_with_a_suggestion(tmp_path, capsys, monkeypatch, argv, typo, meant):
    monkeypatch.chdir(tmp_path)
    line = user_error(capsys, [*argv, typo, "3"])
    prog = " ".join(argv[:2] if argv[0] in ("bench", "control") else argv[:1])
    assert line == f"aihf {prog}: unknown option {typo} (did you mean {meant}?)"
    assert list(tmp_path.iterdir()) == []


def test_bench_llm_errors_are_one_line_as_typed():
    run = subprocess.run(
        [sys.executable, "-m", "aihf", "bench", "llm", "--preset", "huge"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert (
        run.stderr.strip()
        == "aihf bench llm: --preset: invalid choice: 'huge' (choose from 'quick', 'full', 'smollm2')"
    )
    assert "usage" not in run.stdout + run.stderr


def test_unknown_control_command_is_one_line(capsys):
    capsys.readouterr()
    assert main(["control", "trian"]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "aihf control: unknown command 'trian': did you mean 'train'? commands: collect, train, eval, bench\n"
    )
    assert captured.out == ""  # not the multi-line usage


# 6. A mistyped local model folder is not sent to the Hub as if it were an id -----------------------------
@pytest.mark.parametrize("model", ["./my-model", "my-model/", "models/my-model/", "../models/my-model", "~/no-model"])
def test_missing_model_folder_that_looks_like_a_path(workdir, capsys, monkeypatch, model):
    monkeypatch.chdir(workdir)
    out = workdir / "out"
    argv = ["train", "--config", str(workdir / "run.yaml"), "--output_dir", str(out)]
    line = user_error(capsys, [*argv, "--model_name_or_path", model], out)
    assert line == f"aihf train: --model_name_or_path {model}: no such folder"


def test_missing_folder_or_hub_id_names_both(workdir, capsys, monkeypatch):
    # `models/my-model` is a valid Hub id too: the error says it is neither a local folder nor loadable.
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = workdir / "out"
    argv = ["train", "--config", str(workdir / "run.yaml"), "--output_dir", str(out)]
    line = user_error(capsys, [*argv, "--model_name_or_path", "models/my-model"], out)
    assert line.startswith(
        "aihf train: --model_name_or_path models/my-model: cannot load the tokenizer: no such local folder, and as a "
        "Hub id: "
    ), line


# 7. The end-token INFO line only once the start-up checks passed ------------------------------------------
def test_info_lines_only_after_the_start_up_checks(workdir, capsys, monkeypatch):
    monkeypatch.setattr(special_tokens, "_announced", set())  # the line is logged once per process
    used = workdir / "used"
    used.mkdir()
    (used / "model.safetensors").write_bytes(b"")
    capsys.readouterr()
    assert main(["train", "--config", str(workdir / "run.yaml"), "--output_dir", str(used)]) == 2
    captured = capsys.readouterr()
    assert "already holds another run" in captured.err
    assert len(captured.err.splitlines()) == 1 and captured.out == ""  # the data were read, the run refused
    # eval-reward alike: a policy folder is refused after the pairs were tokenised; stdout stays empty.
    monkeypatch.setattr(special_tokens, "_announced", set())
    argv = ["eval-reward", "--reward_model", str(workdir / "model"), "--preferences", str(workdir / "prefs.jsonl")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "not a reward model" in captured.err and len(captured.err.splitlines()) == 1 and captured.out == ""
    monkeypatch.setattr(special_tokens, "_announced", set())
    capsys.readouterr()
    assert train(workdir, workdir / "out") == 0
    captured = capsys.readouterr()
    assert "aihf: end token '" in captured.err and "end token" not in captured.out  # stdout: results only
