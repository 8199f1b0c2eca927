"""Every user error is one line on stderr, `aihf <command>: ...`, exit status 2, nothing written
(issue 7 item 9, issue 6 item 7). Each test runs the command line a user would type."""

import json
import subprocess
import sys

import pytest
import yaml

from aihf.cli import main, train
from aihf.cli.args import parse_train_args
from tests.llm.helpers import task_tokenizer

from .conftest import user_error, write_jsonl


def _run_yaml(workdir, **changes):
    """run.yaml with some keys changed (None removes a key), written next to it."""
    config = yaml.safe_load((workdir / "run.yaml").read_text())
    config.update(changes)
    config = {k: v for k, v in config.items() if v is not None}
    path = workdir / "changed.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _train_error(capsys, config, out, *flags):
    return user_error(capsys, ["train", "--config", str(config), "--output_dir", str(out), *flags], out)


# issue 7 item 9 ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flag, expected",
    [
        ("--learnig_rate", "aihf train: unknown option --learnig_rate (did you mean --learning_rate?)"),
        # argparse would take a prefix for the whole name; a YAML file does not, and neither do flags
        ("--learning_rat", "aihf train: unknown option --learning_rat (did you mean --learning_rate?)"),
        ("--learning_rat=1e-3", "aihf train: unknown option --learning_rat (did you mean --learning_rate?)"),
    ],
)
def test_misspelled_or_abbreviated_flag(workdir, capsys, flag, expected):
    out = workdir / "out"
    flags = [flag] if "=" in flag else [flag, "1e-3"]
    assert _train_error(capsys, workdir / "run.yaml", out, *flags) == expected


def test_flag_of_the_wrong_type(workdir, capsys):
    out = workdir / "out"
    line = _train_error(capsys, workdir / "run.yaml", out, "--max_steps", "two")
    assert line == "aihf train: --max_steps: expected an integer, got 'two'"


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("max_steps", "two", "max_steps: expected an integer, got 'two'"),
        ("max_steps", 2.5, "max_steps: expected an integer, got 2.5"),
        ("learning_rate", "fast", "learning_rate: expected a number, got 'fast'"),
        ("use_peft", "maybe", "use_peft: expected true or false, got 'maybe'"),
        ("beta", [0.1, 0.2], "beta: expected one value (a number), got a list"),
        ("method", "DPO", "method: 'DPO' is not one of aihf, dpo, sft, spin, sft_then_dpo"),
        ("lr_scheduler_type", "cosin", "lr_scheduler_type: 'cosin' is not one of linear, cosine,"),
    ],
)
def test_yaml_value_of_the_wrong_type_names_key_file_and_line(workdir, capsys, key, value, expected):
    config = _run_yaml(workdir, **{key: value})
    line_number = next(i for i, line in enumerate(config.read_text().splitlines(), 1) if line.startswith(f"{key}:"))
    out = workdir / "out"
    line = _train_error(capsys, config, out)
    assert line.startswith(f"aihf train: {config}, line {line_number}: {expected}"), line


def test_yaml_unknown_key(workdir, capsys):
    config = _run_yaml(workdir, learnin_rate=1)
    line = _train_error(capsys, config, workdir / "out")
    assert line.startswith(f"aihf train: {config}, line ") and line.endswith(
        ": unknown key 'learnin_rate' (did you mean learning_rate?)"
    )


@pytest.mark.parametrize("field", ["demonstrations", "preferences"])
def test_missing_data_file(workdir, capsys, field):
    missing = workdir / "no-such.jsonl"
    line = _train_error(capsys, workdir / "run.yaml", workdir / "out", f"--{field}", str(missing))
    assert line == f"aihf train: {missing}: file not found"


def test_missing_model_folder(workdir, capsys):
    missing = workdir / "no-such-model"
    line = _train_error(capsys, workdir / "run.yaml", workdir / "out", "--model_name_or_path", str(missing))
    assert line == f"aihf train: --model_name_or_path {missing}: no such folder"


def test_missing_config_file(workdir, capsys):
    line = user_error(capsys, ["train", "--config", str(workdir / "nope.yaml")])
    assert line == f"aihf train: --config {workdir / 'nope.yaml'}: no such file"


def test_hub_model_id_offline(workdir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = _train_error(capsys, workdir / "run.yaml", workdir / "out", "--model_name_or_path", "nobody/no-model")
    assert line.startswith("aihf train: --model_name_or_path nobody/no-model: cannot load the tokenizer: ")


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--demonstrations", "{dir}/run.yaml"], "{dir}/run.yaml: unsupported file type '.yaml'"),
        (["--demonstrations", "{dir}/prefs.jsonl"], "{dir}/prefs.jsonl, line 1, field 'completion': missing"),
        (["--demonstrations", "{dir}/model"], "{dir}/model: not a folder written by Dataset.save_to_disk"),
        (["--model_name_or_path", "{dir}/demos.jsonl"], "--model_name_or_path {dir}/demos.jsonl: is a file, not a"),
        (["--model_name_or_path", "{dir}"], "--model_name_or_path {dir}: not a model folder (no config.json)"),
    ],
)
def test_file_of_the_wrong_kind(workdir, capsys, flags, expected):
    flags = [f.format(dir=workdir) for f in flags]
    line = _train_error(capsys, workdir / "run.yaml", workdir / "out", *flags)
    assert line.startswith("aihf train: " + expected.format(dir=workdir)), line


def test_config_of_the_wrong_kind(workdir, capsys):
    line = user_error(capsys, ["train", "--config", str(workdir / "demos.jsonl")])
    assert line.startswith(f"aihf train: {workdir / 'demos.jsonl'}, line 2: not valid YAML")


@pytest.mark.parametrize(
    "flags, expected",
    [
        (
            ["--demo_weight", "0", "--pref_weight", "0"],
            "demo_weight and pref_weight are both 0: nothing to learn from (demo_weight from --demo_weight; "
            "pref_weight from --pref_weight)",
        ),
        (
            ["--method", "dpo", "--pref_weight", "0"],
            "demo_weight and pref_weight are both 0 (demo_weight=0.0 (set by --method dpo); --pref_weight 0.0): "
            "nothing to learn from",
        ),
    ],
)
def test_both_weights_zero(workdir, capsys, flags, expected):
    assert _train_error(capsys, workdir / "run.yaml", workdir / "out", *flags) == f"aihf train: {expected}"


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--demo_loss", "self_play"], "self-play (--demo_loss self_play)"),
        (["--method", "spin"], "self-play (--method spin)"),
    ],
)
def test_self_play_without_demonstrations(workdir, capsys, flags, named):
    config = _run_yaml(workdir, demonstrations=None)
    line = _train_error(capsys, config, workdir / "out", *flags)
    assert line.startswith(f"aihf train: no demonstrations given, and {named} contrasts demonstrations"), line


def test_no_preferences_for_a_method_that_needs_them(workdir, capsys):
    config = _run_yaml(workdir, preferences=None)
    line = _train_error(capsys, config, workdir / "out", "--method", "dpo")
    assert line.startswith("aihf train: no preferences given, and --method dpo with pref_weight=1.0 needs them")


def test_bf16_without_a_gpu_is_a_one_line_hint(workdir, capsys):
    config = _run_yaml(workdir, use_cpu=None, bf16=True)
    line = _train_error(capsys, config, workdir / "out")
    assert line == (
        f"aihf train: bf16 mixed precision needs a GPU, and this machine has none (bf16: true in {config}): "
        "remove it to train in float32, or add --use_cpu true for bf16 autocast on the CPU"
    )


def test_a_setting_the_config_refuses_names_where_it_was_set(workdir, capsys):
    config = _run_yaml(workdir, beta=0)
    line = _train_error(capsys, config, workdir / "out")
    assert line == f"aihf train: beta must be > 0, got 0.0 (beta from {config})"


def test_yaml_scalar_where_a_list_is_expected_just_works(workdir):
    config = _run_yaml(workdir, use_peft=True, lora_r=4, lora_target_modules="q_proj", max_steps=1)
    out = workdir / "out"
    assert main(["train", "--config", str(config), "--output_dir", str(out)]) == 0
    assert json.loads((out / "adapter_config.json").read_text())["target_modules"] == ["q_proj"]
    config = _run_yaml(workdir, lora_target_modules=["q_proj", "v_proj"])
    args = parse_train_args(["--config", str(config), "--output_dir", str(out)])
    assert args.model.lora_target_modules == ["q_proj", "v_proj"]


def test_unknown_command(capsys):
    line = user_error(capsys, ["trian"])
    commands = "train, eval-reward, quickstart, bench, control, env"
    assert line == f"aihf: unknown command 'trian': did you mean 'train'? commands: {commands}"


def test_user_error_from_the_real_command_line(workdir):
    """`python -m aihf` as a user types it: exit 2, one line, no traceback, nothing written."""
    out = workdir / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "aihf",
            "train",
            "--config",
            "run.yaml",
            "--learnig_rate",
            "1e-3",
            "--output_dir",
            "out",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.splitlines() == ["aihf train: unknown option --learnig_rate (did you mean --learning_rate?)"]
    assert run.stdout == "" and not out.exists()


# issue 6 item 7 ------------------------------------------------------------------------------
@pytest.fixture
def no_model_loading(monkeypatch):
    """Loading the model fails the test: bad data must be found before."""

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the data were validated")

    monkeypatch.setattr(train, "load_models", load)


def test_malformed_row_is_reported_before_loading_the_model(workdir, capsys, no_model_loading):
    rows = [json.dumps({"prompt": "reverse : a b c =", "completion": "c b a"})] * 5 + ['{"prompt": ']
    (workdir / "broken.jsonl").write_text("\n".join(rows) + "\n")
    line = _train_error(
        capsys, workdir / "run.yaml", workdir / "out", "--demonstrations", str(workdir / "broken.jsonl")
    )
    assert line.startswith(f"aihf train: {workdir / 'broken.jsonl'}, line 6: malformed JSON")


@pytest.mark.parametrize("field", ["demonstrations", "preferences", "eval_demonstrations", "eval_preferences"])
def test_every_row_is_validated_and_tokenised_before_loading_the_model(workdir, capsys, no_model_loading, field):
    """The bad row is the last of 20, and only tokenising it with the run's tokenizer finds the
    fault: an empty prompt, with a tokenizer that has no BOS to condition the answer on (as Qwen's)."""
    tokenizer = task_tokenizer()
    tokenizer.bos_token = None
    tokenizer.save_pretrained(workdir / "no-bos")
    if "demonstrations" in field:
        good, bad = {"prompt": "reverse : a b c =", "completion": "c b a"}, {"prompt": "", "completion": "c b a"}
    else:
        good = {"prompt": "reverse : a b c =", "chosen": "c b a", "rejected": "a b c"}
        bad = {"prompt": "", "chosen": "c b a", "rejected": "a b c"}
    path = workdir / "data.jsonl"
    write_jsonl(path, [good] * 19 + [bad])
    flags = ["--tokenizer_name_or_path", str(workdir / "no-bos"), f"--{field}", str(path)]
    line = _train_error(capsys, workdir / "run.yaml", workdir / "out", *flags)
    assert line == (
        f"aihf train: {path}, line 20, field 'prompt': empty, and the tokenizer has no BOS token to condition "
        "the answer on"
    )


def test_bad_conversational_row_is_reported_before_loading_the_model(workdir, capsys, no_model_loading):
    def turn(role, text):
        return [{"role": role, "content": text}]

    good = {
        "prompt": turn("user", "reverse : a b ="),
        "chosen": turn("assistant", "b a"),
        "rejected": turn("assistant", "a b"),
    }
    bad = {**good, "chosen": [{"role": "assistant"}]}
    path = workdir / "conv.jsonl"
    write_jsonl(path, [good, bad])
    line = _train_error(capsys, workdir / "run.yaml", workdir / "out", "--preferences", str(path))
    assert line.startswith(f"aihf train: {path}, line 2, field 'chosen"), line  # 'chosen[0].content'


# issue 7 item 2 ------------------------------------------------------------------------------
def test_reused_output_dir_is_refused_before_loading_the_model(workdir, capsys, monkeypatch):
    from .conftest import train as run_train

    out = workdir / "out"
    assert run_train(workdir, out) == 0
    before = sorted(p.name for p in out.iterdir())

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(train, "load_models", load)
    capsys.readouterr()
    assert main(["train", "--config", str(workdir / "run.yaml"), "--output_dir", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"aihf train: output_dir {out} already holds another run (")
    assert "--overwrite_output_dir true" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == before  # nothing lost or written


def test_unknown_benchmark(capsys):
    assert user_error(capsys, ["bench", "sped"]) == "aihf bench: unknown benchmark 'sped': choose one of llm, speed"


def test_control_flag_errors_are_one_line(capsys):
    assert user_error(capsys, ["control", "train", "--nope"]) == "aihf control train: unknown option --nope"
