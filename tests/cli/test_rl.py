"""`aihf train --method aihf_rl|rlhf|rft|sft_then_rlhf` and `aihf eval-reward` as a user types them:
each method learns the toy task, eval-reward on the saved reward model, the example config, a GGUF
policy, the help, and bad input refused as one line before any model is loaded."""

import json
import os
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from aihf import ConfigError, DataError
from aihf.cli import main
from aihf.cli import train as train_module
from aihf.llm.generation import HFGenerator
from tests.llm import rl_task
from tests.device import USE_CPU_FLAG

from .conftest import assert_in_order, user_error, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl_cli")
    tok = rl_task.tokenizer()
    model = rl_task.model(tok)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    demos, prefs, eval_prefs = rl_task.make_data()
    for name, rows in (("demos", demos), ("prefs", prefs), ("eval_prefs", eval_prefs)):
        write_jsonl(root / f"{name}.jsonl", rows)
    return {
        "root": root,
        "model": str(root / "model"),
        "demos": str(root / "demos.jsonl"),
        "prefs": str(root / "prefs.jsonl"),
        "eval_prefs": str(root / "eval_prefs.jsonl"),
    }


def _flags(ws, out, method, **extra):
    flags = {
        "model_name_or_path": ws["model"],
        "demonstrations": ws["demos"],
        "preferences": ws["prefs"],
        "eval_preferences": ws["eval_prefs"],
        "output_dir": str(out),
        "method": method,
        "num_rounds": 20,
        "per_device_train_batch_size": 8,
        "num_generations": 4,
        "max_new_tokens": 3,
        "learning_rate": 1e-2,
        "reward_learning_rate": 3e-3,
        "reward_batch_size": 16,
        "beta": 0.01,
        "report_to": "none",
        "use_cpu": USE_CPU_FLAG,
        "save_strategy": "no",
        "disable_tqdm": "true",
        "seed": 0,
        # The round settings these tests' numbers were measured with (the old defaults; tests/llm/rl_task.py).
        "policy_steps_per_round": 1,
        "reward_readout": "last",
    }
    flags.update(extra)
    return [x for k, v in flags.items() for x in (f"--{k}", str(v))]


def _train(capsys, argv, results_dir):
    """`aihf train ...argv`, which must succeed; its metrics (all_results.json) and stdout."""
    capsys.readouterr()
    status = main(["train", *argv])
    captured = capsys.readouterr()
    assert status == 0, captured.err[-2000:]
    return json.loads((Path(results_dir) / "all_results.json").read_text()), captured.out


def _gold_of(model_dir, n=64):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    gen = HFGenerator(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, max_new_tokens=3)
    prompts = [tok(f"say : {t}")["input_ids"] for t in rl_task.TOPICS] * (n // len(rl_task.TOPICS))
    outs = gen(model, prompts, seed=123)
    return sum(rl_task.gold(tok.decode(o, skip_special_tokens=True)) for o in outs) / len(outs)


@pytest.mark.learning
@pytest.mark.parametrize(
    "method, extra",
    [
        ("aihf_rl", {"reward_steps_per_round": 1}),  # (the old default, as policy_steps_per_round above)
        ("rlhf", {"reward_pretrain_steps": 60, "reward_pretrain_patience": 2}),
        ("rft", {"reward_steps_per_round": 1}),
    ],
)
def test_train_rl_methods_learn_through_the_cli(workspace, tmp_path, capsys, method, extra):
    out = tmp_path / method
    metrics, stdout = _train(capsys, _flags(workspace, out, method, **extra), out)
    # The trained policy's gold reward is well above the starting model's (about 0; at most 2).
    # Over seeds 0-3 the gain was 0.9-1.3 (aihf_rl), 0.5-1.9 (rlhf), 0.75-1.8 (rft).
    assert _gold_of(str(out)) > _gold_of(workspace["model"]) + 0.3
    if method != "rft":
        # The learned reward ranks held-out pairs well above chance (0.5): 0.9-1.0 over seeds 0-3.
        # (Not asserted for rft: a reward fitted only to tell demonstrations from the policy's
        # samples ranks the held-out pairs at 0.62-1.0 over those seeds, as its samples become good.)
        assert metrics["reward/eval_accuracy"] > 0.7
    assert (out / "reward_model" / "config.json").is_file() and (out / "all_results.json").is_file()
    assert stdout.splitlines()[-2:] == [
        f"aihf train: final model saved to {out}",
        f"aihf train: reward model saved to {out / 'reward_model'}",
    ]
    history = json.loads((out / "log_history.json").read_text())
    if method == "rlhf":
        assert "reward_model/loss" not in metrics  # frozen after pretraining
        assert history[0]["reward_pretrain/best_holdout_accuracy"] > 0.7
    if method == "rft":
        assert "reward_model/loss_pref" not in metrics and "reward_model/loss_demo" in metrics
    if method == "aihf_rl":
        assert "reward_model/loss_pref" in metrics and "reward_model/loss_demo" in metrics
        # eval-reward on the saved reward model reproduces the last round's held-out numbers.
        argv = ["eval-reward", "--reward_model", str(out / "reward_model"), "--preferences", workspace["eval_prefs"]]
        assert main(argv) == 0
        evaluated = json.loads(capsys.readouterr().out)
        assert evaluated["accuracy"] == pytest.approx(metrics["reward/eval_accuracy"], abs=1e-6)
        assert evaluated["margin"] == pytest.approx(metrics["reward/eval_margin"], abs=1e-4)
        assert evaluated["num_pairs"] == 40


def test_sft_then_rlhf_runs_through_the_cli(workspace, tmp_path, capsys):
    out = tmp_path / "pipeline"
    flags = _flags(workspace, out, "sft_then_rlhf", num_rounds=3, reward_pretrain_steps=5, sft_max_steps=5)
    metrics, stdout = _train(capsys, flags, out / "rlhf")
    assert set(metrics) == {"sft", "rlhf"}
    assert (out / "sft" / "model.safetensors").is_file()
    assert (out / "rlhf" / "reward_model" / "config.json").is_file()
    assert metrics["rlhf"]["step"] == 3
    assert metrics["sft"]["step"] == 5  # sft_max_steps sized the SFT stage
    assert f"aihf train: reward model saved to {out / 'rlhf' / 'reward_model'}" in stdout


def test_example_config_runs_as_shipped(workspace, tmp_path, capsys):
    """examples/aihf_rl.yaml with only the paths (and the length of the run) replaced."""
    argv = [
        "--config",
        str(ROOT / "examples" / "aihf_rl.yaml"),
        "--model_name_or_path",
        workspace["model"],
        "--demonstrations",
        workspace["demos"],
        "--preferences",
        workspace["prefs"],
        "--output_dir",
        str(tmp_path / "example"),
        "--num_rounds",
        "2",
        "--save_steps",
        "1",
    ]
    metrics, _ = _train(capsys, argv, tmp_path / "example")
    assert metrics["round"] == 2
    assert (tmp_path / "example" / "checkpoint-2" / "rl_state.json").is_file()
    written = [name for _, _, files in os.walk(tmp_path / "example") for name in files]
    assert any(name.startswith("events.out.tfevents") for name in written)
    # --resume_from_checkpoint true continues the last round's checkpoint into a longer run.
    argv[argv.index("--num_rounds") + 1] = "3"
    metrics, _ = _train(capsys, [*argv, "--resume_from_checkpoint", "true"], tmp_path / "example")
    assert metrics["round"] == 3 and (tmp_path / "example" / "checkpoint-3" / "rl_state.json").is_file()


def test_a_gguf_policy_with_lora_trains_through_the_cli(tmp_path, capsys):
    from tests.llm.helpers import reverse_task
    from tests.llm.tiny_gguf import write_tiny_llama_gguf

    (tmp_path / "gguf").mkdir()
    write_tiny_llama_gguf(str(tmp_path / "gguf" / "tiny.gguf"))
    demos, prefs = reverse_task(n_demos=8, n_prefs=8)
    write_jsonl(tmp_path / "demos.jsonl", demos)
    write_jsonl(tmp_path / "prefs.jsonl", prefs)
    out = tmp_path / "out"
    argv = [
        "--method", "aihf_rl", "--model_name_or_path", str(tmp_path / "gguf" / "tiny.gguf"),
        "--demonstrations", str(tmp_path / "demos.jsonl"), "--preferences", str(tmp_path / "prefs.jsonl"),
        "--output_dir", str(out), "--num_rounds", "1", "--per_device_train_batch_size", "2",
        "--num_generations", "2", "--max_new_tokens", "2", "--reward_batch_size", "2", "--use_peft", "true",
        "--lora_r", "2", "--reward_use_peft", "true", "--use_cpu", USE_CPU_FLAG, "--save_strategy", "no",
        "--report_to", "none", "--disable_tqdm", "true",
    ]  # fmt: skip
    metrics, stdout = _train(capsys, argv, out)
    assert metrics["round"] == 1
    assert (out / "adapter_config.json").is_file() and (out / "reward_model" / "config.json").is_file()
    assert f"aihf train: final LoRA adapter saved to {out}" in stdout


# help ------------------------------------------------------------------------------------------
def test_rl_help_shows_the_rl_config_in_its_own_group(capsys):
    assert main(["train", "--method", "aihf_rl", "--help"]) == 0
    help_text = capsys.readouterr().out
    order = [
        "aihf: configuration file and method:",
        "  --method {aihf,dpo,sft,spin,sft_then_dpo,aihf_rl,rlhf,rft,sft_then_rlhf}",
        "  --sft_max_steps INT",
        "AIHF-RL (aihf.llm.AIHFRLConfig): rounds, objective, policy and reward steps:",
        "  --num_rounds INT",
        "  --demo_loss {logistic,linear}",
        "  --reward_learning_rate FLOAT",
        "policy, reward model and LoRA:",
        "  --model_name_or_path PATH",
        "  --reward_model_name_or_path PATH",
        "  --reward_use_peft [BOOL]",
        "data:",
        "  --eval_preferences PATH",
        "transformers.TrainingArguments:",
        "Inherited by aihf.llm.AIHFRLConfig",
        "  --learning_rate FLOAT",
    ]
    assert_in_order(help_text, order)
    assert "--demo_loss {nll,self_play}" not in help_text  # AIHFConfig's field is not shown here
    assert "(default: aihf_rl)" in help_text


def test_train_help_points_to_the_rl_help_and_eval_reward_has_its_own(capsys):
    assert main(["train", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "'aihf train --method aihf_rl --help'" in " ".join(help_text.split())
    assert "--num_rounds" not in help_text and "--reward_learning_rate" not in help_text
    assert main(["eval-reward", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--reward_model PATH" in help_text and "--preferences PATH" in help_text


# bad input: the same one-line errors as every aihf command -------------------------------------
def test_bad_input_refused_before_any_model_is_loaded(workspace, tmp_path, monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the data were validated")

    monkeypatch.setattr(train_module, "load_models", load)
    # A folder with the tokenizer and config but no weights: reaching the model load would fail too.
    no_weights = tmp_path / "tokenizer_only"
    AutoTokenizer.from_pretrained(workspace["model"]).save_pretrained(no_weights)
    (no_weights / "config.json").write_text((Path(workspace["model"]) / "config.json").read_text())
    bad = tmp_path / "bad.jsonl"
    bad.write_text(Path(workspace["prefs"]).read_text() + json.dumps({"prompt": "say : t1", "chosen": "g1"}) + "\n")
    flags = _flags(workspace, tmp_path / "o", "aihf_rl", model_name_or_path=no_weights, preferences=bad)
    with pytest.raises(DataError, match=r"bad.jsonl, line 49.*rejected"):
        train_module.train(flags)
    with pytest.raises(ConfigError, match="reward_pretrain_steps"):
        train_module.train(_flags(workspace, tmp_path / "o", "rlhf"))
    with pytest.raises(ConfigError, match="num_generations"):
        train_module.train(_flags(workspace, tmp_path / "o", "aihf_rl", num_generations=1))
    config = tmp_path / "c.yaml"
    config.write_text("num_roundz: 3\n")
    with pytest.raises(ConfigError, match="num_roundz"):
        train_module.train(["--config", str(config)] + _flags(workspace, tmp_path / "o", "aihf_rl"))
    assert not (tmp_path / "o").exists()


def _rl_yaml(workdir, **changes):
    """conftest's run.yaml for an RL method: some keys changed (None removes a key)."""
    config = yaml.safe_load((workdir / "run.yaml").read_text())
    # max_steps sizes the implicit-reward runs of run.yaml; the RL methods refuse it (they count rounds).
    config.update({"method": "aihf_rl", "num_rounds": 1, "max_steps": None, **changes})
    config = {k: v for k, v in config.items() if v is not None}
    path = workdir / "rl.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _line_of(path, key):
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(f"{key}:"))


def _rl_error(capsys, config, out, *flags):
    return user_error(capsys, ["train", "--config", str(config), "--output_dir", str(out), *flags], out)


def test_rl_yaml_keys_are_checked_against_the_rl_config(workdir, capsys):
    out = workdir / "out"
    config = _rl_yaml(workdir, num_roundz=3)
    line = _rl_error(capsys, config, out)
    assert line == f"aihf train: {config}, line {_line_of(config, 'num_roundz')}: unknown key 'num_roundz' " + (
        "(did you mean num_rounds?)"
    )
    config = _rl_yaml(workdir, num_generations="two")
    line = _rl_error(capsys, config, out)
    assert line == (
        f"aihf train: {config}, line {_line_of(config, 'num_generations')}: num_generations: expected an integer, "
        "got 'two'"
    )
    # An RL field under an implicit-reward method is unknown there: the method picks the config, and
    # the line says which methods take it (not a look-alike of this method's options).
    config = _rl_yaml(workdir, method="aihf")
    line = _rl_error(capsys, config, out)
    assert line == f"aihf train: {config}, line {_line_of(config, 'num_rounds')}: unknown key 'num_rounds': " + (
        "an option of `aihf train --method aihf_rl|rlhf|rft|sft_then_rlhf`, not of `aihf train --method aihf`"
    )


@pytest.mark.parametrize(
    "changes, flags, expected",
    [
        (
            {},
            ["--method", "rlhf", "--reward_pretrain_steps", "5", "--demo_weight", "0.5"],
            "--method rlhf contradicts --demo_weight 0.5: RLHF fits the reward model on the preferences alone and "
            "then freezes it. Remove one of them, or use --method aihf_rl, which takes demo_weight and pref_weight "
            "as given",
        ),
        (
            {"method": "rft", "pref_weight": 1.0},
            [],
            "method: rft in {config} contradicts pref_weight: 1.0 in {config}: RFT (ML-IRL) learns the reward from "
            "the demonstrations alone. Remove one of them, or use --method aihf_rl, which takes demo_weight and "
            "pref_weight as given",
        ),
        (
            {},
            ["--method", "rlhf"],
            "--method rlhf fits the reward model on the preferences before RL, but reward_pretrain_steps=0 (the "
            "default): set reward_pretrain_steps > 0 (and reward_pretrain_patience for early stopping), or give a "
            "trained reward model to run RL on (--reward_model_name_or_path)",
        ),
        (
            {"reward_pretrain_steps": 5},
            ["--method", "sft_then_rlhf", "--pref_weight", "0"],
            "--method sft_then_rlhf needs pref_weight > 0 for its RLHF stage (--pref_weight 0.0)",
        ),
        (
            {"reward_pretrain_steps": 5},
            ["--method", "sft_then_rlhf", "--reward_model_name_or_path", "rm"],
            "--method sft_then_rlhf does not support reward_model_name_or_path (yet)",
        ),
        (
            {"eval_demonstrations": "{dir}/demos.jsonl"},
            [],
            "--method aihf_rl does not support eval_demonstrations (AIHF-RL evaluates the reward model on "
            "eval_preferences)",
        ),
        (
            {"preferences": None},
            [],
            "no preferences given, and method: aihf_rl in {config} with pref_weight=1.0 fits the reward model on "
            "them: set preferences (prompt/chosen/rejected rows), or use --method rft to learn the reward from "
            "demonstrations alone",
        ),
    ],
)
def test_rl_method_settings_are_checked(workdir, capsys, changes, flags, expected):
    changes = {k: v.format(dir=workdir) if isinstance(v, str) else v for k, v in changes.items()}
    config = _rl_yaml(workdir, **changes)
    line = _rl_error(capsys, config, workdir / "out", *flags)
    assert line == "aihf train: " + expected.format(config=config)


@pytest.mark.parametrize(
    "flag, path, expected",
    [
        ("--preferences", "no-such.jsonl", "{path}: file not found"),
        ("--demonstrations", "no-such.jsonl", "{path}: file not found"),
        ("--eval_preferences", "no-such.jsonl", "{path}: file not found"),
        ("--model_name_or_path", "no-such-model", "--model_name_or_path {path}: no such folder"),
        ("--reward_model_name_or_path", "no-such-rm", "--reward_model_name_or_path {path}: no such folder"),
        ("--reward_model_name_or_path", "demos.jsonl", "--reward_model_name_or_path {path}: is a file, not a"),
    ],
)
def test_rl_missing_files(workdir, capsys, flag, path, expected):
    path = workdir / path
    line = _rl_error(capsys, _rl_yaml(workdir), workdir / "out", flag, str(path))
    assert line.startswith("aihf train: " + expected.format(path=path)), line


def test_rl_bad_row_is_one_line_before_loading_the_model(workdir, capsys, monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the data were validated")

    monkeypatch.setattr(train_module, "load_models", load)
    path = workdir / "prefs_bad.jsonl"
    write_jsonl(path, [{"prompt": "reverse : a b c =", "chosen": "c b a", "rejected": "a b c"}] * 3 + [{"x": 1}])
    line = _rl_error(capsys, _rl_yaml(workdir), workdir / "out", "--eval_preferences", str(path))
    assert line.startswith(f"aihf train: {path}, line 4"), line


def test_rl_used_output_dir_is_refused_before_loading_the_model(workdir, capsys, monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(train_module, "load_models", load)
    out = workdir / "out"
    (out / "checkpoint-3").mkdir(parents=True)
    line = user_error(capsys, ["train", "--config", str(_rl_yaml(workdir)), "--output_dir", str(out)])
    assert line.startswith(f"aihf train: output_dir {out} already holds another run (checkpoint-3)")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-3"]
    stages = workdir / "stages"
    (stages / "rlhf").mkdir(parents=True)
    (stages / "rlhf" / "model.safetensors").write_text("")
    flags = ["--method", "sft_then_rlhf", "--reward_pretrain_steps", "1", "--output_dir", str(stages)]
    line = user_error(capsys, ["train", "--config", str(_rl_yaml(workdir)), *flags])
    assert line.startswith(f"aihf train: output_dir {stages / 'rlhf'} already holds another run (model.safetensors)")


def test_eval_reward_errors_are_one_line(workdir, capsys):
    prefs = str(workdir / "prefs.jsonl")
    line = user_error(capsys, ["eval-reward", "--preferences", prefs])
    assert line == "aihf eval-reward: --reward_model is required (in the --config file or as a flag)"
    missing = workdir / "no-such-rm"
    line = user_error(capsys, ["eval-reward", "--reward_model", str(missing), "--preferences", prefs])
    assert line == f"aihf eval-reward: --reward_model {missing}: no such folder"
    # `runs/nope` reads as a Hub id too: the line says it is no local folder, as `aihf train` does.
    line = user_error(capsys, ["eval-reward", "--reward_model", "runs/nope", "--preferences", prefs])
    assert line.startswith(
        "aihf eval-reward: --reward_model runs/nope: cannot load the tokenizer: no such local folder, and as a Hub id: "
    ), line
    model = str(workdir / "model")
    line = user_error(capsys, ["eval-reward", "--reward_model", model, "--preferences", str(workdir / "nope.jsonl")])
    assert line == f"aihf eval-reward: {workdir / 'nope.jsonl'}: file not found"
    line = user_error(capsys, ["eval-reward", "--reward_model", model, "--preferences", prefs, "--batch_size", "x"])
    assert line == "aihf eval-reward: --batch_size: expected an integer, got 'x'"
    line = user_error(capsys, ["eval-reward", "--reward_model", model, "--preferences", prefs, "--batch_size", "0"])
    assert line == "aihf eval-reward: --batch_size 0: must be >= 1"
    # A policy folder is no reward model: scored with a random head, its "accuracy" would mean nothing.
    line = user_error(capsys, ["eval-reward", "--reward_model", model, "--preferences", prefs])
    assert line.startswith(f"aihf eval-reward: --reward_model {model}: not a reward model (architectures [")


def test_example_config_with_method_rft_skips_reward_pretraining(workspace, tmp_path, capsys):
    """The example's own advice, `--method rft` over examples/aihf_rl.yaml: its reward_pretrain_steps
    (Bradley-Terry on the preferences, which rft ignores) is skipped with one warning, not a traceback."""
    out = tmp_path / "rft"
    argv = ["--config", str(ROOT / "examples" / "aihf_rl.yaml"), "--method", "rft"]
    for name in ("model", "demos", "prefs"):
        flag = {"model": "model_name_or_path", "demos": "demonstrations", "prefs": "preferences"}[name]
        argv += [f"--{flag}", workspace[name]]
    argv += ["--output_dir", str(out), "--num_rounds", "1", "--report_to", "none", "--disable_tqdm", "true"]
    capsys.readouterr()
    assert main(["train", *argv]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        f"--method rft ignores the preferences, so reward_pretrain_steps: 20 in {ROOT / 'examples' / 'aihf_rl.yaml'}"
        in err
    )
    history = json.loads((out / "log_history.json").read_text())
    assert not any(k.startswith("reward_pretrain/") for entry in history for k in entry)
    # The output's model card names the method, the run's length and where the reward model is.
    readme = (out / "README.md").read_text()
    assert "| method | RFT (ML-IRL)" in readme and "| pref_weight | 0.0 |" in readme, readme
    assert "1 rounds of 4 policy step(s)" in readme and str(out / "reward_model") in readme, readme
    # Asked for in the same place as the method (both flags), the contradiction is refused.
    line = user_error(
        capsys, ["train", *argv, "--reward_pretrain_steps", "5", "--output_dir", str(tmp_path / "x")], tmp_path / "x"
    )
    assert line.startswith(
        "aihf train: --method rft with pref_weight=0.0 (set by --method rft) contradicts --reward_pretrain_steps 5"
    ), line


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


def test_resume_refuses_a_checkpoint_of_another_run(workspace, tmp_path, capsys):
    """`--resume_from_checkpoint true` with changed settings, another method, other data or another
    model: one line naming what differs, exit 2, nothing written (the checkpoint's aihf_run.json)."""
    out = tmp_path / "run"
    base = _flags(workspace, out, "aihf_rl", num_rounds=1, save_strategy="steps", save_steps=1)
    _train(capsys, base, out)
    assert (out / "checkpoint-1" / "aihf_run.json").is_file()
    before = _tree(out)
    resume = [*_flags(workspace, out, "aihf_rl", num_rounds=2, save_strategy="steps", save_steps=1)]
    resume += ["--resume_from_checkpoint", "true"]
    other_prefs = tmp_path / "fewer_prefs.jsonl"
    write_jsonl(other_prefs, [json.loads(line) for line in Path(workspace["prefs"]).read_text().splitlines()[:10]])
    other_model = tmp_path / "other_model"
    import shutil

    shutil.copytree(workspace["model"], other_model)
    cases = [
        (["--learning_rate", "0.5"], "learning_rate 0.01 there, 0.5 here"),
        # (demonstrations unset: rlhf does not use them, and a flag it ignores would add a warning line)
        (
            ["--method", "rlhf", "--reward_pretrain_steps", "2", "--demonstrations", ""],
            "demo_weight 1.0 there, 0.0 here",
        ),
        (["--preferences", str(other_prefs)], "preferences '"),
        (["--model_name_or_path", str(other_model)], f"model '{workspace['model']}' there, '{other_model}' here"),
    ]
    for flags, differ in cases:
        line = user_error(capsys, ["train", *resume, *flags])
        assert line.startswith(
            f"aihf train: resume_from_checkpoint: {out / 'checkpoint-1'} belongs to another run ("
        ), line
        assert differ in line, line
        assert _tree(out) == before
    # The same settings (here with more rounds, under the default constant schedule) resume.
    metrics, _ = _train(capsys, resume, out)
    assert metrics["round"] == 2


def test_rloo_runs_rl_on_a_given_trained_reward_model_kept_fixed(workspace, tmp_path, capsys):
    """TRL's RewardTrainer -> RLOOTrainer: `aihf rloo` with the reward model a first run saved and no reward
    pretraining; the reward model is not trained further (the saved copy scores as the given one)."""
    first = tmp_path / "rm"
    _train(capsys, _flags(workspace, first, "rlhf", num_rounds=1, reward_pretrain_steps=5), first)
    given = str(first / "reward_model")
    second = tmp_path / "rl"
    # TRL's prompt-only rows are all the data RL on a fixed reward model needs (--dataset_name reads them as --prompts).
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [{"prompt": "say : " + t} for t in rl_task.TOPICS])
    argv = _flags(workspace, second, "rlhf", num_rounds=2, reward_pretrain_steps=0, reward_model_name_or_path=given)
    argv = [a for a in argv if a not in ("--method", "rlhf")]
    argv += ["--preferences", "", "--demonstrations", "", "--eval_preferences", "", "--dataset_name", str(prompts)]
    capsys.readouterr()
    assert main(["rloo", *argv]) == 0, capsys.readouterr().err[-2000:]
    from aihf.llm.reward_model import load_reward_model, reward_scores

    tok = AutoTokenizer.from_pretrained(given)
    rows = [tok.encode("say : t1"), tok.encode("say : t2")], [tok.encode(" g1 g2"), tok.encode(" b1 b2")]
    before = reward_scores(load_reward_model(given, tok.pad_token_id), *rows, pad_token_id=tok.pad_token_id)
    saved = load_reward_model(str(second / "reward_model"), tok.pad_token_id)
    after = reward_scores(saved, *rows, pad_token_id=tok.pad_token_id)
    assert after.tolist() == pytest.approx(before.tolist(), abs=1e-6)
    # Without a given reward model the same flags are refused in one line.
    argv = [a for a in argv if a not in ("--reward_model_name_or_path", given)]
    line = user_error(capsys, ["rloo", *argv])
    assert "or give a trained reward model to run RL on (--reward_model_name_or_path)" in line
    # A prompt file with a bad row: one line naming file, line and field, before any model loads.
    write_jsonl(prompts, [{"prompt": "say : t1"}, {"prompt": 3}])
    argv = [*argv, "--reward_model_name_or_path", given, "--output_dir", str(tmp_path / "rl2")]
    line = user_error(capsys, ["rloo", *argv], tmp_path / "rl2")
    assert str(prompts) in line and "line 2" in line and "'prompt'" in line, line
