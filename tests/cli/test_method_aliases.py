"""`aihf dpo ...` is `aihf train --method dpo ...` (TRL's `trl dpo` habit), for every method."""

from aihf.cli import METHOD_ALIASES, main
from aihf.cli.args import METHODS, RL_METHODS

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


def test_trl_data_flags_point_to_where_aihf_reads_data(workdir, tmp_path, capsys):
    out = tmp_path / "x"
    for flag, says in (
        ("--dataset_name", "aihf reads preference pairs from --preferences (TRL's train_dataset)"),
        ("--train_dataset", "and demonstrations (SFT data) from --demonstrations"),
        ("--eval_dataset", "aihf reads held-out data from --eval_preferences and --eval_demonstrations"),
    ):
        argv = ["sft", "--config", str(workdir / "run.yaml"), "--output_dir", str(out), flag, "data.jsonl"]
        line = user_error(capsys, argv, out)
        assert line.startswith(f"aihf sft: unknown option {flag}: ") and says in line, line
