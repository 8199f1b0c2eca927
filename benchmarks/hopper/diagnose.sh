#!/usr/bin/env bash
# Issue 23, item 3: why AIHF loses on Hopper-v5 at the cpu preset (70k env steps).
# AIHF with 1 expert demonstration and 100 pairs, in variants that change one thing each, beside SAC
# on the true reward (the cpu table's true_reward run). Every run logs the two terms' gradient norms,
# the episode lengths and the distance moved. Seed by seed (all variants at seed 0 first), resumable:
# each variant is an `aihf control bench` sweep with its own result folder.
#   bash benchmarks/hopper/diagnose.sh [jobs]      (then: python benchmarks/hopper/report.py)
set -euo pipefail
jobs=${1:-1}
py=${PYTHON:-python}
variant() {  # seed, name, extra train flags
  "$py" -m aihf control bench --preset cpu --envs Hopper-v5 --seeds "$1" --only expert1_p100__aihf --jobs "$jobs" \
    --nice 10 --results "benchmarks/results/control-hopper/$2" --work "runs/control-hopper/$2" \
    --train_flags "$3 --eval_episodes 10"
}
for seed in 0 1 2; do
  "$py" -m aihf control bench --preset cpu --envs Hopper-v5 --seeds "$seed" --only __true_reward__ --jobs 1 --nice 10
  variant "$seed" default ""
  variant "$seed" reward_steps_1 "--reward_steps_per_round 1"
  variant "$seed" pref_weight_0.04 "--pref_weight 0.04"
  variant "$seed" state_action "--reward_input state_action"
  variant "$seed" demo_loss_logistic "--demo_loss logistic"
done
