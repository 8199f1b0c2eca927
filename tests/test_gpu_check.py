"""scripts/gpu_check.sh on a machine without a GPU, and the per-test result log it relies on."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_without_a_gpu_says_so_and_exits_0(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    smi = fake_bin / "nvidia-smi"  # what nvidia-smi does on a machine with the driver but no GPU
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the driver' >&2\nexit 9\n")
    smi.chmod(0o755)
    results = tmp_path / "results"
    for path in (f"{fake_bin}:/usr/bin:/bin", "/usr/bin:/bin"):  # a failing nvidia-smi, and none at all
        proc = subprocess.run(
            ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(results)],
            env={**os.environ, "PATH": path},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().splitlines() == [
            "gpu_check: no CUDA GPU on this machine (nvidia-smi finds none); nothing to check"
        ]
        assert not results.exists()


def test_result_log_records_each_test_as_it_ends(tmp_path):
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "def test_ok():\n    pass\n"
        "def test_bad():\n    assert 1 == 2, 'one is not two'\n"
        "@pytest.mark.skip(reason='no')\ndef test_skipped():\n    pass\n"
        "@pytest.fixture\ndef broken():\n    raise RuntimeError('fixture broke')\n"
        "def test_error(broken):\n    pass\n"
    )
    log = tmp_path / "results.tsv"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.result_log", str(tmp_path)],
        env={**os.environ, "AIHF_TEST_RESULT_LOG": str(log), "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    rows = {line.split("\t")[0].split("::")[-1]: line.split("\t")[1:] for line in log.read_text().splitlines()}
    assert rows["test_ok"] == ["passed", ""]
    assert rows["test_bad"][0] == "failed" and "one is not two" in rows["test_bad"][1]
    assert rows["test_skipped"][0] == "skipped"
    assert rows["test_error"][0] == "error" and "fixture broke" in rows["test_error"][1]
    assert len(rows) == 4


def test_the_test_device_comes_from_one_place_and_cpu_only_tests_say_why(tmp_path):
    """AIHF_TEST_DEVICE picks the device; an unknown value is refused; without a GPU, cuda is a usage
    error rather than a suite of CPU runs that claim to be GPU runs."""
    code = "import tests.device as d; print(d.DEVICE, d.USE_CPU, d.USE_CPU_FLAG)"
    run = lambda value: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code],
        env={**os.environ, "AIHF_TEST_DEVICE": value, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run("cpu").stdout.split() == ["cpu", "True", "true"]
    assert run("CUDA").stdout.split() == ["cuda", "False", "false"]
    assert "AIHF_TEST_DEVICE must be cpu or cuda" in run("tpu").stderr
    import torch

    if not torch.cuda.is_available():
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu_check.py", "--co"],
            env={**os.environ, "AIHF_TEST_DEVICE": "cuda", "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert proc.returncode != 0 and "torch sees no CUDA GPU" in proc.stdout + proc.stderr
