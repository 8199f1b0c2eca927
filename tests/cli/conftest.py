"""A tiny local model, JSONL data and a run.yaml, so that `aihf` runs exactly as a user types it."""

import json

import pytest
import yaml

from aihf.cli import main
from aihf.tasks.tiny import build_model
from tests.llm.helpers import reverse_task, task_tokenizer
from tests.device import USE_CPU


def write_jsonl(path, rows):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def workdir(tmp_path):
    demos, prefs = reverse_task(n_demos=32, n_prefs=32)
    demos[0]["completion"] += " a b c d e"  # unequal token counts between processes
    write_jsonl(tmp_path / "demos.jsonl", demos)
    write_jsonl(tmp_path / "prefs.jsonl", prefs)
    tok = task_tokenizer()
    model = build_model(tok, "llama", hidden_size=32)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    config = {
        "model_name_or_path": str(tmp_path / "model"),
        "demonstrations": str(tmp_path / "demos.jsonl"),
        "preferences": str(tmp_path / "prefs.jsonl"),
        "max_steps": 2,
        "learning_rate": 1e-3,  # YAML reads this as a string: it is converted to the field's type
        "logging_steps": 1,
        "per_device_train_batch_size": 8,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": USE_CPU,
        "max_new_tokens": 4,
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def train(workdir, out, *flags):
    """`aihf train` on the fixture's run.yaml, writing to `out`."""
    return main(["train", "--config", str(workdir / "run.yaml"), "--output_dir", str(out), *flags])


def losses(folder):
    state = json.loads((folder / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def user_error(capsys, argv, out=None):
    """Run `aihf ...argv`, which must fail as a user error: status 2, one line on stderr, nothing
    written to `out`. Returns that line."""
    capsys.readouterr()
    status = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, (status, captured.err[-2000:])
    assert len(lines) == 1, captured.err[-2000:]
    assert "Traceback" not in captured.err
    if out is not None:
        assert not out.exists(), f"{out} was written"
    return lines[0]


def assert_in_order(text, parts):
    """Every one of ``parts`` is in ``text``, in this order."""
    positions = [text.find(s) for s in parts]
    assert -1 not in positions, [s for s, p in zip(parts, positions) if p == -1]
    assert positions == sorted(positions)
