"""Bad settings are refused at start-up, in one line naming the setting, for every command: `aihf train`
(flags and YAML), `aihf quickstart`, and the configurations of both trainers (what AIHF-RL's
command line builds). Nothing is written."""

import pytest
import yaml

from aihf import ConfigError
from aihf.llm import AIHFConfig, AIHFRLConfig
from aihf.llm.trainer import AIHFTrainer
from aihf.tasks.tiny import build_model
from tests.llm.helpers import reverse_task, task_tokenizer

from .conftest import user_error


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--beta", "0"], "beta must be > 0, got 0.0 (beta from --beta)"),
        (["--beta", "-1"], "beta must be > 0"),
        (["--demo_weight", "0", "--pref_weight", "0"], "demo_weight and pref_weight are both 0"),
        (["--demo_weight", "-1"], "demo_weight and pref_weight must be >= 0"),
        (["--method", "spin", "--demonstrations", ""], "no demonstrations given, and self-play (--method spin)"),
        (["--max_steps", "x"], "--max_steps: expected an integer, got 'x'"),
        (["--nonsense", "1"], "unknown option --nonsense"),
        (["--learning_rate", "-1"], "learning_rate must be >= 0"),
        (["--per_device_train_batch_size", "0"], "per_device_train_batch_size must be >= 1"),
        (["--gradient_accumulation_steps", "0"], "gradient_accumulation_steps must be >= 1"),
        (["--seed", "-5"], "seed must be in [0, 2**32 - 1]"),
        (["--output_dir", ""], "output_dir must be a folder path"),
        (["--save_strategy", "steps", "--save_steps", "0"], "save_steps must be > 0"),
        (["--save_total_limit", "-1"], "save_total_limit must be >= 1"),
        (["--max_steps", "-1", "--num_train_epochs", "0"], "num_train_epochs must be > 0"),
        (["--temperature", "0"], "temperature must be > 0"),
        (["--top_p", "1.5"], "top_p must be in (0, 1]"),
        (["--top_k", "-1"], "top_k must be >= 0"),
        (["--generation_batch_size", "0"], "generation_batch_size must be >= 1"),
        (["--max_new_tokens", "0"], "max_new_tokens must be >= 1"),
        (["--use_peft", "true", "--lora_r", "0"], "LoRA needs lora_r >= 1"),
        (["--label_smoothing", "0.7"], "label_smoothing must be in [0, 0.5]"),
        (["--loss_type", "kto"], "--loss_type: invalid choice: 'kto'"),
        (["--skip_nonfinite_steps", "maybe"], "--skip_nonfinite_steps"),
    ],
)
def test_train_flag_errors_are_one_line(workdir, capsys, flags, expected):
    out = workdir / "out"
    args = ["train", "--config", str(workdir / "run.yaml"), *flags]
    if "--output_dir" not in flags:
        args += ["--output_dir", str(out)]
    line = user_error(capsys, args, out)
    assert line.startswith("aihf train: ") and expected in line, line


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--beta", "-1"], "beta must be >= 0"),
        (["--num_generations", "1"], "num_generations must be >= 2"),
        (["--num_rounds", "0"], "num_rounds must be >= 1"),
        (["--temperature", "0"], "temperature must be > 0"),
        (["--learning_rate", "-1"], "learning_rate must be >= 0"),
        (["--demo_weight", "0", "--pref_weight", "0"], "demo_weight and pref_weight are both 0"),
        (["--method", "rlhf"], "--method rlhf fits the reward model on the preferences before RL"),
        (["--method", "rft", "--demonstrations", ""], "no demonstrations given"),
        (["--reward_model_name_or_path", "./missing"], "reward_model_name_or_path"),
    ],
)
def test_rl_train_flag_errors_are_one_line(workdir, capsys, flags, expected):
    out = workdir / "out"
    config = yaml.safe_load((workdir / "run.yaml").read_text())
    del config["max_steps"]  # the RL methods count rounds and refuse it
    (workdir / "rl.yaml").write_text(yaml.safe_dump(config))
    args = ["train", "--config", str(workdir / "rl.yaml"), "--output_dir", str(out)]
    line = user_error(capsys, [*args, *(["--method", "aihf_rl"] if "--method" not in flags else []), *flags], out)
    assert line.startswith("aihf train: ") and expected in line, line


def test_reward_model_for_an_implicit_method_is_refused(workdir, capsys):
    out = workdir / "out"
    args = ["train", "--config", str(workdir / "run.yaml"), "--output_dir", str(out), "--method", "dpo"]
    line = user_error(capsys, [*args, "--reward_model_name_or_path", str(workdir / "model")], out)
    assert "--reward_model_name_or_path" in line


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("beta", 0, "beta must be > 0, got 0.0 (beta from "),
        ("beta", "high", "beta: expected a number, got 'high'"),
        ("seed", 1.5, "seed: expected an integer, got 1.5"),
        ("per_device_train_batch_size", 0, "per_device_train_batch_size must be >= 1"),
        ("reward_model", "rm", "unknown key 'reward_model'"),
        ("skip_nonfinite_steps", [1, 2], "skip_nonfinite_steps: expected one value"),
    ],
)
def test_train_yaml_errors_name_the_file(workdir, capsys, key, value, expected):
    config = yaml.safe_load((workdir / "run.yaml").read_text())
    config[key] = value
    (workdir / "bad.yaml").write_text(yaml.safe_dump(config))
    out = workdir / "out"
    line = user_error(capsys, ["train", "--config", str(workdir / "bad.yaml"), "--output_dir", str(out)], out)
    assert expected in line and "bad.yaml" in line, line


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--max_steps", "0"], "--max_steps must be >= 1"),
        (["--num_eval", "0"], "--num_eval must be >= 1"),
        (["--batch_size", "0"], "--batch_size must be >= 1"),
        (["--num_preferences", "0"], "--num_preferences must be >= 1 for --method aihf"),
        (["--num_demonstrations", "0", "--method", "sft"], "--num_demonstrations must be >= 1"),
        (["--learning_rate", "-1"], "--learning_rate must be > 0"),
        (["--seed", "-1"], "--seed must be in"),
        (["--method", "ppo"], "--method: invalid choice"),
    ],
)
def test_quickstart_errors_are_one_line_and_write_nothing(tmp_path, capsys, flags, expected):
    out = tmp_path / "qs"
    line = user_error(capsys, ["quickstart", "--output_dir", str(out), *flags], out)
    assert line.startswith("aihf quickstart: ") and expected in line, line


@pytest.mark.parametrize(
    "config, overrides, expected",
    [
        (AIHFConfig, {"beta": 0.0}, "beta must be > 0"),
        (AIHFConfig, {"demo_weight": 0.0, "pref_weight": 0.0}, "both 0"),
        (AIHFConfig, {"self_play_regen_prob": 2.0}, "self_play_regen_prob"),
        (AIHFRLConfig, {"beta": -0.1}, "beta must be >= 0"),
        (AIHFRLConfig, {"demo_weight": 0.0, "pref_weight": 0.0}, "both 0"),
        (AIHFRLConfig, {"num_generations": 1}, "num_generations must be >= 2"),
        (AIHFRLConfig, {"learning_rate": -1.0}, "learning_rate must be >= 0"),
        (AIHFRLConfig, {"temperature": 0.0}, "temperature must be > 0"),
        (AIHFRLConfig, {"per_device_train_batch_size": 0}, "per_device_train_batch_size must be >= 1"),
        (AIHFRLConfig, {"seed": 2**32}, "seed must be in"),
    ],
)
def test_trainer_configurations_refuse_bad_settings_in_one_line(tmp_path, config, overrides, expected):
    with pytest.raises(ConfigError) as e:
        config(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", **overrides)
    assert expected in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_implicit_trainer_refuses_missing_sources_and_a_reward_model(tmp_path):
    tok = task_tokenizer()
    model = build_model(tok, "llama", hidden_size=32)
    demos, prefs = reverse_task(n_demos=4, n_prefs=4)
    args = AIHFConfig(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", demo_loss="self_play")
    with pytest.raises(ConfigError, match=r"^demo_weight=1.0 but no training demonstrations were given"):
        AIHFTrainer(model, args=args, preferences=prefs, processing_class=tok)
    with pytest.raises(TypeError, match="reward_model"):  # an implicit method has no reward model to take
        AIHFTrainer(model, args=args, reward_model="rm", processing_class=tok)
    assert not (tmp_path / "out").exists()


def test_trls_list_of_loss_types_is_taken_from_flags_and_yaml(workdir, tmp_path):
    """TRL's `--loss_type sigmoid ipo --loss_weights 1 0.5` (its loss_type is a list); one type stays a string."""
    from aihf.cli.args import parse_train_args

    base = ["--config", str(workdir / "run.yaml"), "--output_dir", str(tmp_path / "o")]
    mixed = parse_train_args([*base, "--loss_type", "sigmoid", "ipo", "--loss_weights", "1", "0.5"]).config
    assert (mixed.loss_type, mixed.loss_weights) == (["sigmoid", "ipo"], [1.0, 0.5])
    assert parse_train_args([*base, "--loss_type", "ipo"]).config.loss_type == "ipo"
    run = yaml.safe_load((workdir / "run.yaml").read_text())
    mix = {**run, "loss_type": ["sigmoid", "hinge"], "loss_weights": [1, 2]}
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(mix))
    config = parse_train_args(["--config", str(tmp_path / "mix.yaml"), "--output_dir", str(tmp_path / "o")]).config
    assert (config.loss_type, config.loss_weights) == (["sigmoid", "hinge"], [1.0, 2.0])
