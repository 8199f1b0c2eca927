"""`aihf dpo ...` is `aihf train --method dpo ...` (TRL's `trl dpo` habit), for every method."""

import json

from aihf.cli import METHOD_ALIASES, TRL_ALIASES, main
from aihf.cli.args import METHODS, RL_METHODS, parse_train_args
from aihf.cli.dataset_name import route_dataset_name

from .conftest import losses, train, user_error


def test_every_method_but_the_default_has_its_alias():
    assert set(METHOD_ALIASES) == (set(METHODS) | set(RL_METHODS)) - {"aihf"}


def test_an_alias_trains_exactly_as_train_with_that_method(workdir, tmp_path):
    assert train(workdir, tmp_path / "train", "--method", "dpo") == 0
    argv = ["dpo", "--config", str(workdir / "run.yaml"), "--output_dir", str(tmp_path / "alias")]
    assert main(argv) == 0
    assert losses(tmp_path / "alias") == losses(tmp_path / "train")
    assert "| method | DPO" in (tmp_path / "alias" / "README.md").read_text()


def test_an_alias_with_another_method_is_refused_in_one_line(workdir, tmp_path, capsys):
    out = tmp_path / "x"
    argv = ["dpo", "--config", str(workdir / "run.yaml"), "--output_dir", str(out), "--method", "sft"]
    line = user_error(capsys, argv, out)
    assert line == "aihf dpo: --method is given by the command itself; use 'aihf train --method ...'"
    assert "'aihf dpo ...' = 'aihf train --method dpo ...'" in _usage_text(capsys)


def _usage_text(capsys):
    main(["--help"])
    return capsys.readouterr().out


def test_trl_trainer_arguments_as_flags_point_to_where_aihf_reads_data(workdir, tmp_path, capsys):
    out = tmp_path / "x"
    for flag, says in (
        ("--train_dataset", "aihf reads preference pairs from --preferences (TRL's train_dataset)"),
        ("--eval_dataset", "aihf reads held-out data from --eval_preferences and --eval_demonstrations"),
    ):
        argv = ["sft", "--config", str(workdir / "run.yaml"), "--output_dir", str(out), flag, "data.jsonl"]
        line = user_error(capsys, argv, out)
        assert line.startswith(f"aihf sft: unknown option {flag}: ") and says in line, line


def test_rloo_is_rlhf_reward_model_then_rloo(workdir, tmp_path, capsys):
    """`aihf rloo` runs --method rlhf: its own check (reward pretraining before RL) answers, under its name."""
    out = tmp_path / "x"
    argv = ["rloo", "--config", str(workdir / "run.yaml"), "--output_dir", str(out), "--max_steps", "-1"]
    line = user_error(capsys, argv, out)
    assert line.startswith("aihf rloo: --method rlhf fits the reward model on the preferences before RL, but "), line
    assert "rloo" in TRL_ALIASES and TRL_ALIASES["rloo"] == "rlhf"
    assert "rloo         = 'aihf train --method rlhf ...'" in _usage_text(capsys)


def test_dataset_name_of_pairs_trains_as_preferences(workdir, tmp_path):
    """`aihf dpo --dataset_name prefs.jsonl` (TRL's habit) is `aihf dpo --preferences prefs.jsonl`."""
    assert train(workdir, tmp_path / "train", "--method", "dpo") == 0
    prefs = str(workdir / "prefs.jsonl")
    argv = ["dpo", "--config", str(workdir / "run.yaml"), "--output_dir", str(tmp_path / "ds")]
    assert main([*argv, "--preferences", "", "--dataset_name", prefs]) == 0
    assert losses(tmp_path / "ds") == losses(tmp_path / "train")


def _routed(workdir, *flags):
    args = parse_train_args(["--config", str(workdir / "run.yaml"), "--output_dir", "o", *flags])
    return route_dataset_name(args), args


def test_dataset_name_of_demonstrations_is_read_as_demonstrations(workdir):
    demos = str(workdir / "demos.jsonl")
    kind, args = _routed(workdir, "--method", "sft", "--demonstrations", "", "--dataset_name", demos)
    assert kind == "demonstrations" and args.data.demonstrations == str(workdir / "demos.jsonl")
    assert args.describe("demonstrations") == f"--dataset_name {workdir / 'demos.jsonl'}"
    assert args.data.eval_demonstrations is None  # eval_strategy=no: no eval set


def test_dataset_name_folder_gives_its_test_split_to_evaluation(workdir, tmp_path):
    import datasets

    rows = [json.loads(line) for line in (workdir / "prefs.jsonl").read_text().splitlines()]
    folder = tmp_path / "hh"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows[:24]), "held": datasets.Dataset.from_list(rows[24:])}
    ).save_to_disk(str(folder))
    flags = ["--preferences", "", "--dataset_name", str(folder), "--dataset_test_split", "held"]
    kind, args = _routed(workdir, *flags, "--eval_strategy", "steps", "--eval_steps", "1")
    data = args.data
    assert kind == "preferences"
    assert (data.preferences, data.preferences_split) == (str(folder), "train")
    assert (data.eval_preferences, data.eval_split) == (str(folder), "held")


def test_dataset_name_mistakes_are_one_line(workdir, tmp_path, capsys):
    prefs, out = str(workdir / "prefs.jsonl"), tmp_path / "x"
    base = ["train", "--config", str(workdir / "run.yaml"), "--output_dir", str(out), "--dataset_name", prefs]
    line = user_error(capsys, base, out)
    assert line == (
        f"aihf train: --dataset_name {prefs} holds preference pairs (chosen, rejected), and preferences: {prefs} in "
        f"{workdir / 'run.yaml'} is given too: give one of them"
    )
    line = user_error(capsys, [*base, "--preferences", "", "--eval_strategy", "steps", "--eval_steps", "1"], out)
    assert line == (
        f"aihf train: --dataset_name {prefs} is one file, with no 'test' split to evaluate on (--eval_strategy "
        "steps): give held-out rows with --eval_preferences"
    )


def test_dataset_name_of_prompt_only_rows_is_refused_in_one_line_by_a_method_that_does_not_sample(
    workdir, tmp_path, capsys
):
    """TRL's RLOO data (rows with only a prompt) would otherwise be read as demonstrations and fail
    later with a line about missing preferences or completions. (The RL methods read it as --prompts:
    tests/cli/test_rl.py::test_rloo_runs_rl_on_a_given_trained_reward_model_kept_fixed.)"""
    prompts, out = tmp_path / "prompts.jsonl", tmp_path / "x"
    prompts.write_text("".join(json.dumps({"prompt": f"say : t{i}"}) + "\n" for i in range(4)))
    for command in ("sft", "dpo"):
        argv = [command, "--config", str(workdir / "run.yaml"), "--output_dir", str(out)]
        argv += ["--preferences", "", "--demonstrations", "", "--dataset_name", str(prompts)]
        line = user_error(capsys, argv, out)
        assert line == (
            f"aihf {command}: --dataset_name {prompts} holds prompt-only rows (TRL's RLOO/GRPO format), which "
            f"--method {command} does not read: the RL methods (aihf_rl, rlhf, rft; aihf rloo) take them as --prompts"
        )


def test_dataset_name_of_demonstrations_for_dpo_says_dpo_reads_pairs(workdir, tmp_path, capsys):
    demos, out = str(workdir / "demos.jsonl"), tmp_path / "x"
    argv = ["dpo", "--config", str(workdir / "run.yaml"), "--output_dir", str(out)]
    line = user_error(capsys, [*argv, "--preferences", "", "--demonstrations", "", "--dataset_name", demos], out)
    assert line == (
        f"aihf dpo: --dataset_name {demos} holds demonstrations (no chosen/rejected), which --method dpo does not "
        "read: it reads preference pairs (prompt/chosen/rejected rows)"
    )


def test_trl_config_fields_as_flags_say_what_aihf_uses(workdir, tmp_path, capsys):
    out = tmp_path / "x"
    for command, flag, says in (("rloo", "--max_completion_length", "sampled completions by max_new_tokens"),
                                ("sft", "--packing", "padding_free=True packs")):
        argv = [command, "--config", str(workdir / "run.yaml"), "--output_dir", str(out), flag, "true"]
        line = user_error(capsys, argv, out)
        assert line.startswith(f"aihf {command}: unknown option {flag}: TRL's {flag[2:]}: ") and says in line, line
