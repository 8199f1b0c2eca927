"""aihf bench llm settings that would fail a run later, or change nothing, are said at once."""

import warnings

import pytest

from aihf import ConfigError
from aihf.bench.llm import parse


def test_a_missing_base_model_is_one_error(tmp_path):
    with pytest.raises(ConfigError, match=r"--base_model .*nope: no such model folder or \.gguf file"):
        parse(["--base_model", str(tmp_path / "nope"), "--list"])
    with pytest.raises(ConfigError, match="no such model folder"):
        parse(["--base_model", str(tmp_path / "nope.gguf")])
    assert parse(["--base_model", str(tmp_path)]).base_model == str(tmp_path)


def test_the_ablation_needs_an_aihf_method():
    with pytest.raises(ConfigError, match="--ablation varies the weights of the AIHF methods .* 'dpo,sft' has none"):
        parse(["--ablation", "true", "--methods", "dpo,sft"])
    assert parse(["--ablation", "true", "--methods", "dpo,aihf_dpo"]).ablation


def test_best_of_in_the_weak_demos_regime_says_what_it_changes():
    with pytest.warns(UserWarning, match="--best_of 4 with --regime weak_demos: the demonstrations stay best of 2"):
        parse(["--regime", "weak_demos", "--best_of", "4"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse(["--regime", "weak_demos"])  # the preset's best_of: nothing to say
