"""The shipped examples/*.yaml run on a CPU as written (issue 7 item 8): only the Hub model and
datasets are swapped for local ones, and training stops after one step."""

from pathlib import Path

import pytest
import yaml

from aihf.cli import main
from aihf.cli.args import parse_train_args
from aihf.tasks.tiny import build_model
from tests.llm.helpers import LETTERS, task_tokenizer

from .conftest import write_jsonl

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _turn(role, text):
    return [{"role": role, "content": text}]


@pytest.fixture
def hub_stand_ins(tmp_path):
    """A tiny model, UltraChat-like `messages` rows and UltraFeedback-like conversational pairs."""
    tok = task_tokenizer()
    build_model(tok, "llama", hidden_size=32, seed=0).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    seqs = [[LETTERS[(i + k) % len(LETTERS)] for k in range(3)] for i in range(32)]
    prompts = [_turn("user", "reverse : " + " ".join(s) + " =") for s in seqs]
    write_jsonl(
        tmp_path / "chat.jsonl",
        [{"messages": p + _turn("assistant", " ".join(s[::-1]))} for p, s in zip(prompts, seqs)],
    )
    write_jsonl(
        tmp_path / "feedback.jsonl",
        [
            {"prompt": p, "chosen": _turn("assistant", " ".join(s[::-1])), "rejected": _turn("assistant", " ".join(s))}
            for p, s in zip(prompts, seqs)
        ],
    )
    return tmp_path


@pytest.mark.parametrize("name", ["aihf_dpo.yaml", "self_play.yaml", "lora_sft_then_dpo.yaml"])
def test_example_runs_on_cpu_as_shipped(hub_stand_ins, monkeypatch, name):
    shipped = yaml.safe_load((EXAMPLES / name).read_text())
    assert "bf16" not in shipped and "use_cpu" not in shipped  # nothing CPU-specific was added either
    monkeypatch.chdir(hub_stand_ins)  # output_dir as shipped, relative: runs/...
    flags = {
        "model_name_or_path": hub_stand_ins / "model",
        "demonstrations": hub_stand_ins / "chat.jsonl",
        "preferences": hub_stand_ins / "feedback.jsonl",
        "max_steps": 1,
    }
    argv = ["train", "--config", str(EXAMPLES / name), *(x for k, v in flags.items() for x in (f"--{k}", str(v)))]
    assert main(argv) == 0
    final = Path(shipped["output_dir"]) / ("dpo" if shipped.get("method") == "sft_then_dpo" else "")
    weights = "adapter_model.safetensors" if shipped.get("use_peft") else "model.safetensors"
    assert (hub_stand_ins / final / weights).exists()


@pytest.mark.parametrize("name", ["aihf_dpo.yaml", "self_play.yaml", "lora_sft_then_dpo.yaml"])
def test_example_values_parse_as_written(name):
    written = yaml.safe_load((EXAMPLES / name).read_text())
    args = parse_train_args(["--config", str(EXAMPLES / name)])
    for key, value in written.items():
        obj = next(o for o in (args.model, args.data, args.run, args.config) if hasattr(o, key))
        got = getattr(obj, key)
        if key == "report_to":
            assert got == [value], key
        else:
            assert got == pytest.approx(value) if isinstance(value, float) else got == value, key
        assert args.origins[key] == str(EXAMPLES / name)
