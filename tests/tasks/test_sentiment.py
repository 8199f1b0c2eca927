import dataclasses
import json
import math
import os
import random
import shutil
import subprocess
import sys

import pytest

from aihf.errors import ConfigError
from aihf.tasks.sentiment.base import BUILD_INFO, SHIPPED_BASE, BaseModelConfig
from aihf.tasks.sentiment.corpus import HELD_OUT_PLAYS, load_plays, make_prompts, split_corpus
from aihf.tasks.sentiment.data import TaskConfig, boundary_merges, build_task_data, data_key, read_jsonl
from aihf.tasks.sentiment.gold import (
    bradley_terry_prob,
    gold_statistics,
    label_pairs,
    load_gold,
    vader_compound,
)

from tests.device import USE_CPU

from .helpers import count_e, micro_base


# ----------------------------------------------------------------------------- gold
def test_vader_is_the_default_gold_and_scores_sentiment():
    gold = load_gold("aihf.tasks.sentiment.gold:vader_compound")
    assert gold is vader_compound
    assert gold("What a good and happy love, sweet and fair") > 0.5
    assert gold("Villain, I hate thee; foul and cursed death") < -0.5
    assert gold("the table is in the room") == 0.0


def test_a_user_gold_plugs_in():
    gold = load_gold("tests.tasks.helpers:count_e")
    assert gold is count_e
    assert gold("eee") == 1.0


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_colon", "expected 'module:function'"),
        ("aihf.nope:f", "cannot import"),
        ("tests.tasks.helpers:missing", "cannot import"),
        ("tests.tasks.helpers:not_a_float", "must map a string to a finite float"),
    ],
)
def test_a_bad_gold_is_a_config_error_naming_the_setting(spec, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_gold(spec)
    assert str(e.value).startswith(f"--gold '{spec}'")


def test_bradley_terry_probabilities_match_hand_computed_values():
    assert bradley_terry_prob(1.0, 0.0, 1.0) == pytest.approx(1 / (1 + math.exp(-1)), abs=1e-12)  # 0.7310585786
    assert bradley_terry_prob(0.2, 0.5, 0.25) == pytest.approx(0.2314752165, abs=1e-9)  # sigmoid(-1.2)
    assert bradley_terry_prob(0.3, 0.3, 0.1) == 0.5
    assert bradley_terry_prob(0.7, -0.1, 0.4) + bradley_terry_prob(-0.1, 0.7, 0.4) == pytest.approx(1.0)
    assert bradley_terry_prob(100.0, 0.0, 0.01) == 1.0  # no overflow far out in either tail
    assert bradley_terry_prob(0.0, 100.0, 0.01) == 0.0
    with pytest.raises(ValueError):
        bradley_terry_prob(0.0, 1.0, 0.0)


def test_bradley_terry_draws_follow_their_probability():
    n = 4000
    labels = label_pairs([1.0] * n, [0.0] * n, 1.0, random.Random(0))
    assert all(p == pytest.approx(0.7310585786) for _, p in labels)
    assert abs(sum(win for win, _ in labels) / n - 0.731) < 0.03  # 4 standard errors
    assert sum(win for win, _ in label_pairs([0.0] * n, [0.0] * n, 1.0, random.Random(1))) / n == pytest.approx(
        0.5, abs=0.03
    )


def test_gold_statistics():
    s = gold_statistics([0.0, 0.5, -0.5, 0.0])
    assert s["n"] == 4 and s["mean"] == 0.0 and s["fraction_nonzero"] == 0.5 and s["fraction_positive"] == 0.25
    assert s["std"] == pytest.approx(math.sqrt(0.5 / 3))


# ----------------------------------------------------------------------------- corpus
def test_prompts_come_only_from_held_out_plays():
    train_text, held_out = split_corpus(load_plays())
    assert sorted(held_out) == sorted(HELD_OUT_PLAYS)
    prompts = make_prompts(held_out, prefix_words=6, seed=0)
    assert len(prompts) > 1000 and len(set(prompts)) == len(prompts)
    assert prompts == make_prompts(held_out, prefix_words=6, seed=0)
    assert prompts != make_prompts(held_out, prefix_words=6, seed=1)
    for p in prompts[:50]:
        speaker, speech = p.split("\n")
        assert speaker.endswith(".") and len(speech.split()) == 6
    assert "OTHELLO." not in train_text  # the held-out plays' speakers never appear in pre-training
    assert "Hamlet" in train_text


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def task_data(tmp_path_factory):
    base = micro_base(str(tmp_path_factory.mktemp("base")))
    config = TaskConfig(
        output_dir=str(tmp_path_factory.mktemp("data")),
        base_model=base,
        gold="tests.tasks.helpers:count_e",
        continuation_tokens=6,
        num_demonstrations=5,
        num_preferences=7,
        num_validation=3,
        num_test=4,
        best_of=3,
        eval_samples=2,
        seed=0,
    )
    return config, build_task_data(config, log=lambda *_: None)


def test_task_data_has_the_asked_shapes_and_a_card(task_data):
    config, folder = task_data
    rows = {
        name: read_jsonl(os.path.join(folder, f"{name}.jsonl"))
        for name in (
            "prompts_train",
            "prompts_validation",
            "prompts_test",
            "demonstrations",
            "preferences",
            "references_validation",
            "references_test",
        )
    }
    assert {k: len(v) for k, v in rows.items()} == {
        "prompts_train": 12,
        "prompts_validation": 3,
        "prompts_test": 4,
        "demonstrations": 5,
        "preferences": 7,
        "references_validation": 3,
        "references_test": 4,
    }
    splits = [{r["prompt"] for r in rows[f"prompts_{s}"]} for s in ("train", "validation", "test")]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    for r in rows["demonstrations"]:
        assert set(r) == {"prompt", "completion", "gold"} and r["gold"] == count_e(r["completion"])
    for r in rows["preferences"]:
        assert r["gold_chosen"] == count_e(r["chosen"]) and r["gold_rejected"] == count_e(r["rejected"])
    for r in rows["references_test"]:
        assert len(r["base_completions"]) == 2 and r["base_gold"] == [count_e(c) for c in r["base_completions"]]
        assert r["best_gold"] >= max(r["base_gold"]) - 1.0 and r["best_gold"] == count_e(r["best_completion"])

    with open(os.path.join(folder, "card.json")) as f:
        card = json.load(f)
    assert card["sizes"]["demonstrations"] == 5 and card["sizes"]["preferences"] == 7
    assert card["seed"] == 0 and card["config"]["gold"] == "tests.tasks.helpers:count_e"
    stats = card["gold"]["base_samples"]
    assert stats["n"] == 14 and 0 <= stats["fraction_nonzero"] <= 1 and stats["std"] >= 0
    temperature = card["preferences"]["bt_temperature"]
    assert temperature == pytest.approx(0.25 * stats["std"])
    for r in rows["preferences"]:  # the stored label probability is the BT probability of the chosen one
        assert r["p_chosen"] == pytest.approx(bradley_terry_prob(r["gold_chosen"], r["gold_rejected"], temperature))
    assert card["R_demo_test"] == pytest.approx(sum(r["best_gold"] for r in rows["references_test"]) / 4)
    assert "| demonstrations | 5 |" in open(os.path.join(folder, "card.md")).read()


def test_task_data_is_reused_when_the_configuration_matches(task_data):
    config, folder = task_data
    stamp = os.path.getmtime(os.path.join(folder, "preferences.jsonl"))
    assert build_task_data(config, log=lambda *_: None) == folder
    assert os.path.getmtime(os.path.join(folder, "preferences.jsonl")) == stamp
    # The same base model in another folder (e.g. another clone) is the same data.
    moved = os.path.join(os.path.dirname(folder), "moved-base")
    shutil.copytree(config.base_model, moved)
    assert build_task_data(dataclasses.replace(config, base_model=moved), log=lambda *_: None) == folder
    assert os.path.getmtime(os.path.join(folder, "preferences.jsonl")) == stamp


def test_task_data_trains_with_aihf(task_data, tmp_path):
    from aihf.llm import AIHFConfig, AIHFTrainer

    config, folder = task_data
    trainer = AIHFTrainer(
        config.base_model,
        args=AIHFConfig(
            output_dir=str(tmp_path),
            max_steps=1,
            per_device_train_batch_size=2,
            report_to="none",
            use_cpu=USE_CPU,
            save_strategy="no",
        ),
        demonstrations=os.path.join(folder, "demonstrations.jsonl"),
        preferences=os.path.join(folder, "preferences.jsonl"),
    )
    assert trainer.train().global_step == 1


def test_too_many_prompts_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="prompts"):
        build_task_data(TaskConfig(output_dir=str(tmp_path / "d"), base_model=str(tmp_path), num_preferences=10**6))
    assert not os.path.exists(tmp_path / "d")


# ----------------------------------------------------------------------------- regimes
@pytest.fixture(scope="module")
def both_regimes(tmp_path_factory):
    """The same tiny task built in each regime: enough demonstrations and pairs for their means."""
    base = micro_base(str(tmp_path_factory.mktemp("base")))
    config = TaskConfig(
        base_model=base,
        gold="tests.tasks.helpers:count_e",
        continuation_tokens=6,
        num_demonstrations=40,
        num_preferences=60,
        num_validation=3,
        num_test=4,
        best_of=8,
        eval_samples=2,
    )
    out = {}
    for regime in ("strong_demos", "weak_demos"):
        folder = build_task_data(
            dataclasses.replace(config, regime=regime, output_dir=str(tmp_path_factory.mktemp(regime))),
            log=lambda *_: None,
        )
        out[regime] = {
            name: read_jsonl(os.path.join(folder, f"{name}.jsonl"))
            for name in ("demonstrations", "preferences", "references_validation", "references_test")
        }
        with open(os.path.join(folder, "card.json")) as f:
            out[regime]["card"] = json.load(f)
    return out


def test_weak_demos_regime_has_weaker_demonstrations_and_cleaner_labels_on_the_same_references(both_regimes):
    strong, weak = both_regimes["strong_demos"], both_regimes["weak_demos"]
    assert weak["card"]["regime"] == {"name": "weak_demos", "demo_best_of": 2, "bt_temperature_factor": 0.05}
    assert strong["card"]["regime"] == {"name": "strong_demos", "demo_best_of": 8, "bt_temperature_factor": 0.25}
    # The references, and so R_base and R_demo, are the regime's invariant.
    for split in ("references_validation", "references_test"):
        assert weak[split] == strong[split]
    assert weak["card"]["R_demo_test"] == strong["card"]["R_demo_test"]
    # Best of 2 instead of best of 8 base samples: a clearly lower mean (0.15 against 0.29 here).
    demo = {k: [r["gold"] for r in v["demonstrations"]] for k, v in both_regimes.items()}
    assert [r["prompt"] for r in weak["demonstrations"]] == [r["prompt"] for r in strong["demonstrations"]]
    mean = {k: sum(v) / len(v) for k, v in demo.items()}
    assert mean["weak_demos"] < mean["strong_demos"] - 0.03
    assert weak["card"]["gold"]["demonstrations"]["mean"] == pytest.approx(mean["weak_demos"])
    # The same two samples per pair and the same uniform draws: a lower temperature can only move
    # each label towards the higher gold, so every pair the strong regime labels right stays right.
    right = {k: [r["gold_chosen"] > r["gold_rejected"] for r in v["preferences"]] for k, v in both_regimes.items()}
    for s_pair, w_pair in zip(strong["preferences"], weak["preferences"], strict=True):
        assert s_pair["prompt"] == w_pair["prompt"]
        assert {s_pair["chosen"], s_pair["rejected"]} == {w_pair["chosen"], w_pair["rejected"]}
    assert all(w for s, w in zip(right["strong_demos"], right["weak_demos"]) if s)
    share = {k: v["card"]["preferences"]["fraction_chosen_higher_gold"] for k, v in both_regimes.items()}
    assert share == {k: sum(v) / len(v) for k, v in right.items()}
    assert share["weak_demos"] > share["strong_demos"]  # 0.60 against 0.52 here: count_e's many ties cap both
    base_std = strong["card"]["gold"]["base_samples"]["std"]
    assert weak["card"]["preferences"]["bt_temperature"] == pytest.approx(0.05 * base_std)
    assert weak["card"]["config"]["bt_temperature"] == 0.05 and weak["card"]["config"]["demo_best_of"] == 2


def test_the_default_regime_keeps_the_data_key_of_the_older_data(tmp_path):
    from aihf.tasks.sentiment.base import SHIPPED_BASE

    key = data_key(TaskConfig(), SHIPPED_BASE)
    # The fields of the key before the regimes existed.
    older = set(
        "output_dir base_model gold continuation_tokens prefix_words num_demonstrations num_preferences "
        "num_validation num_test best_of eval_samples bt_temperature seed batch_size".split()
    )
    assert set(key) == older and key["bt_temperature"] == 0.25 and key["best_of"] == 16
    # Spelling the regime's settings out is the same data; a regime or setting that differs is not.
    assert data_key(TaskConfig(demo_best_of=16, bt_temperature=0.25), SHIPPED_BASE) == key
    weak = data_key(TaskConfig(regime="weak_demos"), SHIPPED_BASE)
    assert weak == {**key, "bt_temperature": 0.05, "demo_best_of": 2}
    assert data_key(TaskConfig(demo_best_of=2, bt_temperature=0.05), SHIPPED_BASE) == weak
    assert data_key(TaskConfig(bt_temperature=0.1), SHIPPED_BASE) == {**key, "bt_temperature": 0.1}


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("regime", "medium", "--regime must be one of strong_demos, weak_demos"),
        ("demo_best_of", 0, "--demo_best_of must be >= 1"),
        ("bt_temperature", 0.0, "--bt_temperature must be > 0"),
    ],
)
def test_bad_regime_settings_are_config_errors(tmp_path, field, value, message):
    with pytest.raises(ConfigError, match=message):
        build_task_data(TaskConfig(output_dir=str(tmp_path / "d"), **{field: value}))
    assert not os.path.exists(tmp_path / "d")


def test_build_data_command_takes_the_regime(tmp_path, capsys):
    from aihf.tasks.sentiment.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["build-data", "--regime", "medium", "--output_dir", str(tmp_path / "d")])
    assert e.value.code == 2 and "invalid choice: 'medium'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["build-data", "--help"])
    assert "weak_demos" in capsys.readouterr().out


def test_boundary_merges_finds_continuations_that_start_inside_the_prompts_last_word(task_data):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(task_data[0].base_model)
    # " b" + "e" is one token, " be"; "\n" and " " start tokens of their own.
    rows = [("HAMLET.\nTo be", [" or not", "\nto be"]), ("HAMLET.\nTo b", [" or", "e or not", "e, or"])]
    assert boundary_merges(tokenizer, rows) == [("HAMLET.\nTo b", "e or not")]


# ----------------------------------------------------------------------------- base model
def test_the_shipped_base_is_small_and_is_what_build_base_makes_by_default():
    files = os.listdir(SHIPPED_BASE)
    assert {"model.safetensors", "config.json", "tokenizer.json", BUILD_INFO} <= set(files)
    assert sum(os.path.getsize(os.path.join(SHIPPED_BASE, f)) for f in files) <= 8 * 2**20
    with open(os.path.join(SHIPPED_BASE, BUILD_INFO)) as f:
        record = json.load(f)
    from dataclasses import asdict

    assert record["config"] == asdict(BaseModelConfig())
    assert record["command"].startswith("python -m aihf.tasks.sentiment build-base")


@pytest.mark.slow
def test_build_base_command_rebuilds_a_base_at_a_tiny_budget(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "base"
    cmd = [
        sys.executable,
        "-m",
        "aihf.tasks.sentiment",
        "build-base",
        "--output_dir",
        str(out),
        "--vocab_size",
        "300",
        "--hidden_size",
        "32",
        "--num_layers",
        "1",
        "--num_heads",
        "2",
        "--intermediate_size",
        "64",
        "--context_length",
        "32",
        "--batch_size",
        "4",
        "--train_tokens",
        "256",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out / BUILD_INFO) as f:
        record = json.load(f)
    assert record["config"]["hidden_size"] == 32 and record["pretraining_tokens"] == 256
    assert math.isfinite(record["held_out_loss"]) and record["tokens_per_second"] > 0
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert len(tokenizer) == 300 and model.config.vocab_size == 300
    assert tokenizer.decode(tokenizer("Who's there?")["input_ids"]) == "Who's there?"
