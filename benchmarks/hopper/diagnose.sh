#!/usr/bin/env bash
# Issue 23, item 3: why AIHF loses on Hopper-v5 at the cpu preset (70k env steps).
# AIHF with 1 expert demonstration and 100 pairs, 3 seeds, in variants that change one thing each;
# every run logs the two terms' gradient norms, the episode lengths and the distance moved.
# Resumable: each variant is an `aihf control bench` sweep with its own result folder.
#   bash benchmarks/hopper/diagnose.sh [jobs]      (then: python benchmarks/hopper/report.py)
set -euo pipefail
jobs=${1:-1}
py=${PYTHON:-python}
variant() {  # name, extra train flags
  "$py" -m aihf control bench --preset cpu --envs Hopper-v5 --only expert1_p100__aihf --jobs "$jobs" --nice 10 \
    --results "benchmarks/results/control-hopper/$1" --work "runs/control-hopper/$1" --train_flags "$2 --eval_episodes 10"
}
variant default ""
variant pref_weight_0.04 "--pref_weight 0.04"
variant state_action "--reward_input state_action"
