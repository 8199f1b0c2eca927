"""`torchrun -m aihf.cli train ...` on CPU: two processes save, resume and match one process."""

import json
import os
import subprocess
import sys

import pytest

from .conftest import losses


def _torchrun(workdir, *args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    run = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "aihf.cli", "train", *args],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.slow
def test_two_process_self_play_saves_and_resumes(workdir):
    common = [
        "--config",
        str(workdir / "run.yaml"),
        "--demo_loss",
        "self_play",
        "--per_device_train_batch_size",
        "4",
        "--max_steps",
        "4",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--self_play_round_steps",
        "3",
    ]
    _torchrun(workdir, *common, "--output_dir", str(workdir / "full"))
    ckpt = workdir / "full" / "checkpoint-2"
    assert {
        "aihf_self_play_samples_rank0.json",
        "aihf_self_play_samples_rank1.json",
        "aihf_opponent.safetensors",
    } <= set(os.listdir(ckpt))
    expected = losses(workdir / "full")
    _torchrun(workdir, *common, "--output_dir", str(workdir / "resumed"), "--resume_from_checkpoint", str(ckpt))
    got = json.loads((workdir / "resumed" / "trainer_state.json").read_text())
    got = {h["step"]: h["loss"] for h in got["log_history"] if "loss" in h}
    expected = dict(zip(range(1, 5), expected))
    for step in (3, 4):
        assert got[step] == pytest.approx(expected[step], rel=1e-5), step
    # saving only the model (no optimizer/RNG files) must not trip over the staging folder
    _torchrun(workdir, *common, "--output_dir", str(workdir / "light"), "--save_only_model", "true")
    assert (workdir / "light" / "checkpoint-4" / "aihf_opponent.safetensors").exists()


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process(workdir):
    """Same global batch (2 x 4 vs 1 x 8), gloo on CPU: the loss curves agree to 1e-5 relative."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    common = ["--config", str(workdir / "run.yaml"), "--max_steps", "5"]
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "aihf.cli",
            "train",
            *common,
            "--output_dir",
            str(workdir / "one"),
            "--per_device_train_batch_size",
            "8",
        ],
        check=True,
        env=env,
        cwd=workdir,
        capture_output=True,
    )
    run = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "aihf.cli",
            "train",
            *common,
            "--output_dir",
            str(workdir / "two"),
            "--per_device_train_batch_size",
            "4",
        ],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = losses(workdir / "one"), losses(workdir / "two")
    assert len(one) == len(two) == 5
    assert two == pytest.approx(one, rel=1e-5)
    # and the two processes really split the batch: each saw half of it
    state = json.loads((workdir / "two" / "trainer_state.json").read_text())
    assert state["train_batch_size"] == 4
