"""aihf.methods: the `--method` presets and their checks, from Python, equal to what `aihf train` applies."""

import warnings

import pytest

from aihf import ConfigError
from aihf.cli.args import parse_train_args
from aihf.cli.checks import apply_method
from aihf.llm import AIHFConfig, AIHFRLConfig
from aihf.methods import METHOD_SETTINGS, METHODS, RL_METHODS, config_for


def _quiet(method, **overrides):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these may warn
        return config_for(method, **overrides)


@pytest.mark.parametrize("method", METHODS + RL_METHODS)
def test_config_for_applies_the_preset_and_builds_the_methods_config(method, tmp_path):
    extra = {"reward_pretrain_steps": 2} if method in ("rlhf", "sft_then_rlhf") else {}
    config = _quiet(method, output_dir=str(tmp_path), **extra)
    assert type(config) is (AIHFRLConfig if method in RL_METHODS else AIHFConfig)
    for name, value in METHOD_SETTINGS[method].items():
        assert getattr(config, name) == value, name


@pytest.mark.parametrize("method", ["dpo", "sft", "spin", "aihf", "rlhf", "rft", "sft_then_rlhf"])
def test_config_for_equals_what_the_cli_applies(method, tmp_path):
    """The same preset from Python and from `aihf train --method` (every field of the config)."""
    extra = {"reward_pretrain_steps": 2} if method in ("rlhf", "sft_then_rlhf") else {}
    extra |= {"num_rounds": 2} if method in RL_METHODS else {"max_steps": 3}
    flags = ["--model_name_or_path", "m", "--output_dir", str(tmp_path), "--method", method, "--learning_rate", "0.003"]
    for name, value in extra.items():
        flags += [f"--{name}", str(value)]
    args = parse_train_args(flags)
    apply_method(args)  # the settings part of `aihf train`'s checks (the rest checks paths and data)
    python = _quiet(method, output_dir=str(tmp_path), learning_rate=0.003, **extra)
    assert python.to_dict() == args.config.to_dict()


def test_a_contradicting_keyword_is_refused_in_one_line_that_says_what_to_use(tmp_path):
    with pytest.raises(ConfigError) as e:
        config_for("dpo", output_dir=str(tmp_path), demo_weight=1.0)
    assert str(e.value) == (
        "method='dpo' contradicts demo_weight=1.0: DPO has no demonstration term. Remove one of them, or use "
        "method='aihf', which takes demo_weight, pref_weight and demo_loss as given"
    )
    assert _quiet("dpo", output_dir=str(tmp_path), demo_weight=0.0).demo_weight == 0.0  # agreeing is fine


def test_a_keyword_the_method_does_not_read_warns(tmp_path):
    with pytest.warns(UserWarning, match=r"^max_new_tokens is not used by method='dpo'$"):
        config = config_for("dpo", output_dir=str(tmp_path), max_new_tokens=5)
    assert config.max_new_tokens == 5


@pytest.mark.parametrize(
    "method, overrides, message",
    [
        ("rlhf", {}, "method='rlhf' fits the reward model on the preferences before RL, but reward_pretrain_steps=0 "
         "(the default)"),
        ("rft", {"reward_pretrain_steps": 3}, "method='rft' with pref_weight=0.0 (set by method='rft') contradicts "
         "reward_pretrain_steps=3"),
        ("aihf_rl", {"max_steps": 5}, "max_steps=5: method='aihf_rl' trains in rounds"),
        ("sft", {"demo_weight": 0.0}, "demo_weight and pref_weight are both 0"),
        ("sft_then_dpo", {"pref_weight": 0.0}, "method='sft_then_dpo' needs pref_weight > 0 for its DPO stage"),
        ("ppo", {}, "unknown method 'ppo': choose one of aihf, dpo"),
    ],
)
def test_cross_option_checks_refuse_in_one_line(method, overrides, message, tmp_path):
    with pytest.raises(ConfigError) as e:
        config_for(method, output_dir=str(tmp_path), **overrides)
    assert str(e.value).startswith(message), str(e.value)


def test_an_unknown_field_names_the_config_class(tmp_path):
    with pytest.raises(ConfigError, match="AIHFConfig has no field num_rounds"):
        config_for("dpo", output_dir=str(tmp_path), num_rounds=3)


def test_a_misspelt_field_gets_a_did_you_mean(tmp_path):
    with pytest.raises(ConfigError) as e:
        config_for("dpo", output_dir=str(tmp_path), bta=0.1)
    assert str(e.value) == "AIHFConfig has no field bta (method='dpo') (did you mean beta?)"


def test_trls_trainer_name_points_to_the_method(tmp_path):
    with pytest.raises(ConfigError) as e:
        config_for("rloo", output_dir=str(tmp_path))
    assert str(e.value).startswith("unknown method 'rloo' (TRL's rloo is 'rlhf'): choose one of aihf, dpo")


def test_rlhf_without_pretraining_says_how_to_give_a_trained_reward_model(tmp_path):
    # Python and the command line name their own way of giving one.
    with pytest.raises(ConfigError) as e:
        config_for("rlhf", output_dir=str(tmp_path), reward_pretrain_steps=0)
    assert str(e.value).endswith(
        "or give a trained reward model to run RL on (trained_reward_model=True and the trainer's reward_model=)"
    )


def test_a_trl_field_aihf_names_otherwise_says_what_to_use(tmp_path):
    with pytest.raises(ConfigError) as e:
        config_for("rlhf", output_dir=str(tmp_path), max_completion_length=8)
    assert str(e.value) == (
        "AIHFRLConfig has no field max_completion_length (method='rlhf'): TRL's max_completion_length: aihf bounds "
        "prompt + completion by max_length (prompts cut to max_prompt_length) and sampled completions by max_new_tokens"
    )
