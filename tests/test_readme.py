"""The README's Python example runs as printed, with the Hub model swapped for a local tiny one."""

import json
import re
from pathlib import Path

from aihf.tasks.tiny import build_model
from tests.llm.helpers import reverse_task, task_tokenizer

README = Path(__file__).resolve().parents[1] / "README.md"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _python_examples() -> list[str]:
    section = README.read_text().split("## In Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_python_example_trains_and_saves(tmp_path, monkeypatch):
    code, use = _python_examples()
    assert HUB_ID in code and 'demonstrations="demos.jsonl"' in code and 'preferences="prefs.jsonl"' in code
    tok = task_tokenizer()
    build_model(tok, "llama", hidden_size=32, seed=0).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    demos, prefs = reverse_task(n_demos=16, n_prefs=16)
    (tmp_path / "demos.jsonl").write_text("".join(json.dumps(r) + "\n" for r in demos))
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prefs))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    namespace = {}
    exec(compile(code.replace(HUB_ID, str(tmp_path / "model")), str(README), "exec"), namespace)

    trainer = namespace["trainer"]
    assert trainer.state.global_step == 6  # 16 pairs, batch 8, 3 epochs (the Trainer defaults)
    assert 0 < trainer.state.log_history[-1]["train_loss"] < float("inf")
    assert (tmp_path / "runs" / "aihf" / "model.safetensors").exists()

    # The second example loads the result with plain transformers calls and samples from it.
    exec(compile(use, str(README), "exec"), {})
    assert "tokenizer.decode" in use and (tmp_path / "runs" / "aihf" / "README.md").exists()
