"""The one place the test suite takes its device from: ``AIHF_TEST_DEVICE=cpu`` (default) or ``cuda``.

Trainer configs, CLI flags and run YAMLs of the tests use :data:`USE_CPU` / :data:`USE_CPU_FLAG`, so
``AIHF_TEST_DEVICE=cuda pytest`` trains every trainer, CLI and benchmark test on the GPU
(scripts/gpu_check.sh does). Tests that are CPU-only by nature are skipped there with the reason
in :data:`CPU_ONLY` (tests/conftest.py).
"""

import os

DEVICE = os.environ.get("AIHF_TEST_DEVICE", "cpu").strip().lower()
if DEVICE not in ("cpu", "cuda"):
    raise RuntimeError(f"AIHF_TEST_DEVICE must be cpu or cuda, got {DEVICE!r}")
USE_CPU = DEVICE == "cpu"
USE_CPU_FLAG = "true" if USE_CPU else "false"  # the value of --use_cpu on a command line

# Test paths (relative to tests/) that run on the CPU whatever the device, and why.
CPU_ONLY = {
    "control/": "control trains SB3's SAC with small MLPs on the CPU by design",
    "test_distributed.py": "CPU data parallelism over gloo (torchrun), the CPU's path",
    "cli/test_distributed.py": "CPU data parallelism over gloo (torchrun), the CPU's path",
    "bench/test_speed.py": "aihf bench speed's CPU measurements (the GPU check runs bench speed --device cuda)",
    "bench/test_kill.py": "the LLM benchmark runs one CPU process per run by design",
    "bench/test_llm.py": "the LLM benchmark runs one CPU process per run by design",
    "bench/test_llm_regime.py": "the LLM benchmark runs one CPU process per run by design",
}
