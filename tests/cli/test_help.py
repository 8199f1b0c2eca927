"""What `aihf --help`, `aihf train --help`, `aihf --version` and `aihf env` show (issue 7 item 11),
and that `python -m aihf` is `aihf` (issue 6 item 7)."""

import subprocess
import sys
from importlib import metadata

import aihf
from aihf.cli import main


def test_usage_lists_the_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(f"  {c} " in out for c in ("train", "quickstart", "env")) and "--version" in out


def test_train_help_leads_with_aihf_then_model_and_data_then_training_arguments(capsys):
    assert main(["train", "--help"]) == 0
    help_text = capsys.readouterr().out
    order = [
        "aihf: configuration file, method and objective:",
        "  --config PATH",
        "  --method {aihf,dpo,sft,spin,sft_then_dpo}",
        "  --beta FLOAT",
        "  --demo_loss {nll,self_play}",
        "model and LoRA:",
        "  --model_name_or_path PATH",
        "  --use_peft [BOOL]",
        "data:",
        "  --demonstrations PATH",
        "transformers.TrainingArguments:",
        "  --output_dir PATH",
        "  --learning_rate FLOAT",
        "  --resume_from_checkpoint true|PATH",
    ]
    positions = [help_text.find(s) for s in order]
    assert -1 not in positions, [s for s, p in zip(order, positions) if p == -1]
    assert positions == sorted(positions)
    # one spelling per option: the --with-hyphens aliases still parse but are not listed
    assert "--learning-rate" not in help_text and "--model-name-or-path" not in help_text


def _help_of(help_text, option):
    start = help_text.index(f"  {option} ")
    end = help_text.index("\n  --", start + 1)
    return " ".join(help_text[start:end].split())


def test_train_help_says_what_resume_takes_and_shows_defaults_as_they_are(capsys):
    main(["train", "--help"])
    help_text = capsys.readouterr().out
    resume = _help_of(help_text, "--resume_from_checkpoint")
    assert "'true' continues the last checkpoint-* in output_dir; or the path of a checkpoint folder" in resume
    # a newline in a default is shown escaped, not as a line break swallowed by the formatter
    assert _help_of(help_text, "--implicit_prompt_marker").endswith(r"(default: '\n\nAssistant:')")
    assert _help_of(help_text, "--learning_rate").endswith("(default: 1e-06)")
    assert "(default: None)" not in help_text


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"aihf {aihf.__version__}\n"


def test_env_prints_the_versions_a_bug_report_needs(capsys):
    assert main(["env"]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    for name in ("torch", "transformers", "peft", "accelerate", "trl", "datasets"):
        assert lines[name] == metadata.version(name), name
    assert lines["aihf"] == aihf.__version__
    assert lines["python"] == ".".join(map(str, sys.version_info[:3]))
    assert {"platform", "accelerator"} <= set(lines)


def test_env_takes_no_arguments(capsys):
    assert main(["env", "--verbose"]) == 2
    assert capsys.readouterr().err == "aihf env: takes no arguments, got --verbose\n"


def test_python_dash_m_aihf_and_aihf_cli_are_the_command():
    for module in ("aihf", "aihf.cli"):  # `torchrun -m aihf.cli` and `accelerate launch -m aihf.cli` run the latter
        run = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True)
        assert (run.returncode, run.stdout, run.stderr) == (0, f"aihf {aihf.__version__}\n", ""), module
