#!/usr/bin/env bash
# The main command: every alignment method on the built-in sentiment task (`aihf bench llm
# --preset quick`), end to end from a fresh clone after setting up .venv (offline; ~10 CPU-minutes,
# so ~5-6 min on 2 quiet CPU cores, plus the first set-up; the base model is shipped). Prints the
# comparison tables (gold at matched KL first) and the paths of the plots. Extra arguments go to
# `aihf bench llm` and win over the ones here (e.g. `--jobs 1`, `--output_dir DIR`); finished runs
# are skipped, so a rerun resumes. It writes to runs/bench/llm-quick rather than to the committed
# results in benchmarks/results/llm/quick, which it would otherwise find finished.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# One single-threaded process per core, at most 8 (the quick sweep has 15 runs). Counted before
# OMP_NUM_THREADS=1 is exported and without it: GNU nproc reports OMP_NUM_THREADS, so it said 1 and
# the sweep ran its runs one after another in one process.
jobs=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 2)
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
if [ "$jobs" -gt 8 ]; then jobs=8; fi
exec .venv/bin/aihf bench llm --preset quick --jobs "$jobs" --output_dir runs/bench/llm-quick "$@"
