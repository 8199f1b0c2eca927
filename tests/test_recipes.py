"""The paper-scale recipes (recipes/, docs/recipes.md; issue 9 item 7) parse and run their data path.

Each recipe's YAML goes through the parser ``aihf train`` uses, and the commands docs/recipes.md
gives are run as written on tiny local stand-ins: the Hub datasets are replaced by folders laid out
and typed as the real repositories (tests/fixtures/recipes/), the Hub models by tiny random ones,
and training stops after a step or a round. Nothing touches the network.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import warnings
from pathlib import Path

import pytest
import yaml

from aihf.cli import main
from aihf.cli import rl as rl_cli
from aihf.cli import train as train_cli
from aihf.cli.args import RL_METHODS, parse_train_args
from aihf.errors import ConfigError
from aihf.tasks.tiny import build_model, build_word_tokenizer
from tests.device import USE_CPU_FLAG

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
FIXTURES = ROOT / "tests" / "fixtures" / "recipes"
DOC = ROOT / "docs" / "recipes.md"
CONFIGS = sorted(p for p in RECIPES.glob("*/*.yaml") if p.parent.name != "accelerate")
HUB_MODELS = {"EleutherAI/pythia-1.4b", "alignment-handbook/zephyr-7b-sft-full"}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _doc_commands() -> list[list[str]]:
    """Every command of the doc's ```bash blocks, continuation lines joined, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def _train_argv(command: list[str]) -> list[str]:
    """``["train", ...]`` of a launcher command (torchrun/accelerate ... -m aihf.cli train ...), for ``main``."""
    return command[command.index("aihf.cli") + 1 :]


def _config_of(command: list[str]) -> str | None:
    return command[command.index("--config") + 1] if "--config" in command else None


def _prepare():
    spec = importlib.util.spec_from_file_location("recipes_prepare", RECIPES / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("path", CONFIGS, ids=_rel)
def test_recipe_parses_with_the_cli_parser(path):
    """Every key is one `aihf train` knows, every value converts to its field's type and comes back
    as written, and the method's settings checks pass (on a CPU, --use_cpu stands in for the GPU)."""
    written = yaml.safe_load(path.read_text())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = parse_train_args(["--config", str(path), "--use_cpu", "true"])
    # No renamed key (transformers 5 renamed gradient_checkpointing to activation_checkpointing).
    assert not [str(w.message) for w in caught if "deprecated" in str(w.message)]
    (rl_cli.check_settings if args.run.method in RL_METHODS else train_cli._check_settings)(args)
    for key, value in written.items():
        obj = next(o for o in (args.run, args.model, args.data, args.config) if hasattr(o, key))
        got = getattr(obj, key)
        if key == "report_to":
            assert got == [value]
        elif isinstance(value, float):
            assert got == pytest.approx(value), key
        else:
            assert got == value, key
        assert args.origins[key] == str(path)
    # A chain starts from a Hub model; a later stage starts from an earlier recipe's output_dir.
    outputs = {yaml.safe_load(p.read_text())["output_dir"] for p in CONFIGS}
    assert written["model_name_or_path"] in HUB_MODELS | outputs
    assert written["output_dir"].startswith(f"runs/{path.parent.name}/")


@pytest.mark.parametrize("path", CONFIGS, ids=_rel)
def test_recipe_with_an_unknown_or_mistyped_key_is_refused(path, tmp_path):
    text = path.read_text()
    bad = tmp_path / path.name
    bad.write_text(text + "learning_rat: 1.0e-6\n")
    with pytest.raises(ConfigError, match=r"line \d+: unknown key 'learning_rat' \(did you mean learning_rate\?\)"):
        parse_train_args(["--config", str(bad), "--use_cpu", "true"])
    bad.write_text(re.sub(r"(?m)^learning_rate: .*$", "learning_rate: fast", text))
    with pytest.raises(ConfigError, match=r"line \d+: learning_rate: expected a number, got 'fast'"):
        parse_train_args(["--config", str(bad), "--use_cpu", "true"])


@pytest.mark.parametrize(("name", "stage"), [("zero3.yaml", 3), ("zero2.yaml", 2)])
def test_accelerate_config_names_its_zero_stage(name, stage, tmp_path):
    from accelerate.commands.config.config_args import ClusterConfig

    path = RECIPES / "accelerate" / name
    config = ClusterConfig.from_yaml_file(str(path))  # accelerate's own reader: unknown keys are refused
    assert config.distributed_type == "DEEPSPEED"
    assert config.deepspeed_config["zero_stage"] == stage
    assert config.mixed_precision == "bf16"
    if stage == 3:
        assert config.deepspeed_config["zero3_init_flag"] is True  # the 7B policy is partitioned while it loads
    bad = tmp_path / name
    bad.write_text(path.read_text() + "zero_stag: 3\n")
    with pytest.raises(ValueError, match="zero_stag"):
        ClusterConfig.from_yaml_file(str(bad))


def test_doc_gives_a_launch_command_for_every_recipe():
    commands = _doc_commands()
    launched = {}
    for command in commands:
        for flag in ("--config", "--config_file"):
            if flag in command:
                assert (ROOT / command[command.index(flag) + 1]).is_file(), command
        if "aihf.cli" in command:
            launched[_config_of(command)] = command
    assert set(launched) == {_rel(p) for p in CONFIGS}
    for config, command in launched.items():
        if "pythia-hh" in config:  # AIHF-RL's own loop is data parallel through torchrun, no DeepSpeed
            assert command[0] == "torchrun"
        else:
            zero = "recipes/accelerate/zero2.yaml" if "self_play" in config else "recipes/accelerate/zero3.yaml"
            assert command[:4] == ["accelerate", "launch", "--config_file", zero], command


# ----------------------------------------------------------------------------- data path
def _tiny_model(folder: Path, texts: list[str], arch: str, add_bos: bool) -> Path:
    tok = build_word_tokenizer(texts, add_bos=add_bos)
    build_model(tok, arch, hidden_size=32, seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _fixture_texts(name: str) -> list[str]:
    import datasets

    texts = []
    for path in sorted((FIXTURES / name).rglob("*.*")):
        if path.suffix in (".jsonl", ".parquet"):
            rows = datasets.Dataset.from_parquet(str(path)) if path.suffix == ".parquet" else None
            for row in rows if rows is not None else map(json.loads, path.read_text().splitlines()):
                texts.append(json.dumps(row))
    return [re.sub(r'[{}\[\]",:]|\\n', " ", t) for t in texts]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty folder as the working directory (the recipes' relative data/ and runs/ paths land
    there), with datasets' cache inside it."""
    import datasets

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return tmp_path


def _run_doc_commands(kind: str, stand_ins: dict[str, list[str]], small: dict[str, list[str]], capsys) -> list:
    """Run the doc's commands for ``kind`` ("hh" or "ultra") in order: prepare with the fixture
    datasets and tiny tokenizer appended, each `aihf train` with ``small`` appended (and the tiny
    model where the recipe names a Hub model), each `aihf eval-reward` as written."""
    recipe_dir = {"hh": "recipes/pythia-hh/", "ultra": "recipes/zephyr-ultra/"}[kind]
    ran = []
    for command in _doc_commands():
        if "recipes/prepare.py" in command and command[command.index("recipes/prepare.py") + 1] == kind:
            argv = command[command.index("recipes/prepare.py") + 1 :] + stand_ins["prepare"]
            ran.append(("prepare", _prepare().main(argv)))
        elif "aihf.cli" in command and _config_of(command).startswith(recipe_dir):
            config = _config_of(command)
            written = yaml.safe_load((ROOT / config).read_text())
            argv = _train_argv(command)
            argv[argv.index("--config") + 1] = str(ROOT / config)
            if written["model_name_or_path"] in HUB_MODELS:
                argv += stand_ins["model"]
            argv += small["rl" if written["method"] in RL_METHODS else "implicit"]
            capsys.readouterr()
            status = main(argv)
            err = capsys.readouterr().err
            assert status == 0, (config, err[-3000:])
            ran.append((config, written))
        elif command[:2] == ["aihf", "eval-reward"] and kind in " ".join(command):
            capsys.readouterr()
            assert main(command[1:]) == 0
            ran.append(("eval-reward", json.loads(capsys.readouterr().out)))
    return ran


SMALL_IMPLICIT = [
    "--max_steps",
    "1",
    "--per_device_train_batch_size",
    "2",
    "--max_new_tokens",
    "6",
    "--logging_steps",
    "1",
]
SMALL_RL = [
    *("--num_rounds", "1", "--per_device_train_batch_size", "2", "--num_generations", "2"),
    *("--reward_batch_size", "4", "--reward_pretrain_steps", "2", "--reward_pretrain_eval_steps", "1"),
    *("--max_new_tokens", "6"),
]
ON_CPU = ["--use_cpu", USE_CPU_FLAG, "--report_to", "none", "--save_strategy", "no"]


def test_pythia_hh_recipes_run_their_data_path(workdir, capsys):
    model = _tiny_model(workdir / "tiny-pythia", _fixture_texts("hh-rlhf"), "gpt2", add_bos=False)
    ran = _run_doc_commands(
        "hh",
        {
            "prepare": ["--dataset", str(FIXTURES / "hh-rlhf"), "--tokenizer", str(model)],
            "model": ["--model_name_or_path", str(model)],
        },
        {"implicit": SMALL_IMPLICIT + ON_CPU, "rl": SMALL_RL + ON_CPU},
        capsys,
    )
    assert [r[0] for r in ran] == [
        "prepare",
        "recipes/pythia-hh/sft.yaml",
        "recipes/pythia-hh/rlhf.yaml",
        "recipes/pythia-hh/aihf_rl.yaml",
        "eval-reward",
        "eval-reward",
    ]
    files = ran[0][1]["files"]
    # 2 x 12 well-formed train pairs plus an identical pair and one with an empty answer, dropped.
    assert {n: f["rows_written"] for n, f in files.items()} == {
        "preferences.jsonl": 24,
        "demonstrations.jsonl": 24,
        "eval_preferences.jsonl": 8,
    }
    reasons = " | ".join(files["preferences.jsonl"]["dropped_by_reason"])
    assert "identical to 'chosen'" in reasons and "empty once the prefix" in reasons
    prefs = [json.loads(line) for line in open("data/hh/preferences.jsonl")]
    demos = [json.loads(line) for line in open("data/hh/demonstrations.jsonl")]
    assert all(p["prompt"].endswith("\n\nAssistant:") and p["chosen"].startswith(" ") for p in prefs)
    assert [(d["prompt"], d["completion"]) for d in demos] == [(p["prompt"], p["chosen"]) for p in prefs]
    assert Path("runs/pythia-hh/sft/model.safetensors").is_file()
    for name in ("rlhf", "aihf_rl"):
        results = json.loads(Path(f"runs/pythia-hh/{name}/all_results.json").read_text())
        assert "reward/eval_accuracy" in results  # scored on the held-out HH pairs
        reward_steps = [k for k in results if k.startswith("reward_model/")]
        # RLHF's reward model is frozen after pretraining; AIHF-RL's takes steps on demonstrations and pairs.
        assert ("reward_model/loss_demo" in reward_steps) if name == "aihf_rl" else not reward_steps, reward_steps
        assert Path(f"runs/pythia-hh/{name}/reward_model/config.json").is_file()
    assert ran[-1][1]["num_pairs"] == 8


# self_play_aihf.yaml loads bf16 weights on purpose (docs/recipes.md): DeepSpeed keeps float32 master weights.
@pytest.mark.filterwarnings("ignore:trainable parameters are torch.bfloat16")
def test_zephyr_ultra_recipes_run_their_data_path(workdir, capsys):
    texts = _fixture_texts("ultrachat_200k") + _fixture_texts("ultrafeedback_binarized")
    model = _tiny_model(workdir / "tiny-zephyr", texts, "llama", add_bos=True)
    ran = _run_doc_commands(
        "ultra",
        {
            "prepare": [
                *("--demonstrations_dataset", str(FIXTURES / "ultrachat_200k")),
                *("--preferences_dataset", str(FIXTURES / "ultrafeedback_binarized")),
                *("--tokenizer", str(model)),
            ],
            "model": ["--model_name_or_path", str(model)],
        },
        {"implicit": SMALL_IMPLICIT + ON_CPU, "rl": SMALL_RL + ON_CPU},
        capsys,
    )
    assert [r[0] for r in ran] == [
        "prepare",
        "recipes/zephyr-ultra/aihf_dpo.yaml",
        "recipes/zephyr-ultra/dpo.yaml",
        "recipes/zephyr-ultra/self_play_aihf.yaml",
    ]
    files = ran[0][1]["files"]
    # A conversation ending on the user's turn and an identical pair are dropped.
    assert {n: f["rows_written"] for n, f in files.items()} == {
        "demonstrations.jsonl": 16,
        "eval_demonstrations.jsonl": 6,
        "preferences.jsonl": 16,
        "eval_preferences.jsonl": 6,
    }
    assert "must be the assistant's answer" in " ".join(files["demonstrations.jsonl"]["dropped_by_reason"])
    assert "identical to 'chosen'" in " ".join(files["preferences.jsonl"]["dropped_by_reason"])
    pair = json.loads(open("data/ultra/preferences.jsonl").readline())
    assert [m["role"] for m in pair["prompt"]] == ["user"]
    assert [m["role"] for m in pair["chosen"]] == [m["role"] for m in pair["rejected"]] == ["assistant"]
    # The demonstration term each recipe trains with: NLL, none (DPO), self-play against its own samples.
    terms = {"aihf_dpo": "demo/nll", "dpo": None, "self_play_aihf": "demo/margins"}
    for name, term in terms.items():
        state = json.loads(Path(f"runs/zephyr-ultra/{name}/trainer_state.json").read_text())
        assert state["global_step"] == 1
        logged = {k for entry in state["log_history"] for k in entry}
        assert "rewards/accuracies" in logged
        assert (term in logged) if term else not any(k.startswith("demo/") for k in logged), (name, logged)
        assert Path(f"runs/zephyr-ultra/{name}/model.safetensors").is_file()
        metrics = json.loads(Path(f"runs/zephyr-ultra/{name}/all_results.json").read_text())
        assert "eval_rewards/accuracies" in metrics  # evaluated on the held-out UltraFeedback pairs
    assert "eval_demo/nll" in json.loads(Path("runs/zephyr-ultra/aihf_dpo/all_results.json").read_text())


def test_prepare_caps_and_disjoint_demonstrations(workdir):
    """--num_* caps keep a seeded sample; --disjoint takes demonstrations from the pairs not kept as preferences."""
    model = _tiny_model(workdir / "tiny-pythia", _fixture_texts("hh-rlhf"), "gpt2", add_bos=False)
    base = ["hh", "--dataset", str(FIXTURES / "hh-rlhf"), "--tokenizer", str(model)]
    prepare = _prepare()

    def read(folder, name):
        return [json.loads(line) for line in open(f"{folder}/{name}.jsonl")]

    prepare.main([*base, "--output_dir", "capped", "--num_preferences", "10", "--num_demonstrations", "5"])
    prefs, demos = read("capped", "preferences"), read("capped", "demonstrations")
    assert (len(prefs), len(demos)) == (10, 5)
    assert [(d["prompt"], d["completion"]) for d in demos] == [(p["prompt"], p["chosen"]) for p in prefs[:5]]

    prepare.main([*base, "--output_dir", "disjoint", "--num_preferences", "10", "--disjoint"])
    prefs, demos = read("disjoint", "preferences"), read("disjoint", "demonstrations")
    assert (len(prefs), len(demos)) == (10, 14)  # 24 valid pairs
    assert not {d["prompt"] for d in demos} & {p["prompt"] for p in prefs}  # the fixture's 24 prompts differ
    with pytest.raises(SystemExit, match="--disjoint needs --num_preferences"):
        prepare.main([*base, "--output_dir", "bad", "--disjoint"])
