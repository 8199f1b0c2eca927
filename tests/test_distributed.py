"""The README's data-parallel command, as printed, on a CPU machine: real DDP, and the same
training as one process with the same global batch, down to an uneven last batch."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from aihf.tasks.tiny import build_model

from .llm.helpers import reverse_task, task_tokenizer

COMPARED = ("loss", "loss/pref", "loss/demo", "demo/nll", "rewards/accuracies", "rewards/margins", "logps/chosen")


def _run(command, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    run = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _logs(folder):
    state = json.loads((folder / "trainer_state.json").read_text())
    return [h for h in state["log_history"] if "loss" in h]


@pytest.mark.slow
def test_readme_torchrun_command_is_data_parallel_on_cpu(tmp_path):
    # Six pairs and six demonstrations at 2 per process: the second step holds the last two items
    # on process 0 while process 1 gets padding copies of the first two, which must weigh nothing.
    demos, prefs = reverse_task(n_demos=6, n_prefs=6, seed=3)
    for i, d in enumerate(demos):
        d["completion"] += " a b" * i  # unequal token counts across processes
    for name, rows in (("demos", demos), ("prefs", prefs)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = task_tokenizer()
    build_model(tok, "llama", hidden_size=32).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    run_yaml = {  # no use_cpu: aihf must see the process group and train data parallel
        "model_name_or_path": "model",
        "demonstrations": "demos.jsonl",
        "preferences": "prefs.jsonl",
        "output_dir": "two",
        "per_device_train_batch_size": 2,
        "num_train_epochs": 1,
        "learning_rate": 0.01,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run_yaml))

    torchrun = [sys.executable, "-m", "torch.distributed.run"]  # `torchrun`, from this interpreter
    two = _run(
        [*torchrun, "--standalone", "--nproc_per_node", "2", "-m", "aihf.cli", "train", "--config", "run.yaml"],
        tmp_path,
    )
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in two.stderr
    one_cmd = [sys.executable, "-m", "aihf.cli", "train", "--config", "run.yaml"]
    _run([*one_cmd, "--per_device_train_batch_size", "4", "--output_dir", "one"], tmp_path)

    one, two = _logs(tmp_path / "one"), _logs(tmp_path / "two")
    assert len(one) == len(two) == 2  # 6 items at a global batch of 4: a full step, then a half one
    for a, b in zip(one, two):
        for key in COMPARED:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
        assert b["num_tokens"] == a["num_tokens"]  # the padding copies are not counted either
    p_one, p_two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    moved = max((p_one[k] - p for k, p in load_file(tmp_path / "model" / "model.safetensors").items()), key=torch.norm)
    assert moved.abs().max() > 1e-3  # training did change the parameters
    for name in p_one:
        # Adam at lr 1e-2 moves an element ~1e-2 a step whatever its gradient's size: rounding of a
        # near-zero gradient (another summation order under other kernel sets, e.g. avx2) shows up to
        # ~1e-4 after 2 steps; atol is 1 % of a step, far below a missing or doubled batch.
        torch.testing.assert_close(p_two[name], p_one[name], rtol=0, atol=1e-4, msg=name)
