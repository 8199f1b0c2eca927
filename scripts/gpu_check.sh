#!/usr/bin/env bash
# The GPU check: one command for a machine with one CUDA GPU and no network, within ~8 minutes.
#   bash scripts/gpu_check.sh [RESULTS_DIR]        (default: benchmarks/results/gpu/<UTC date>)
# 1. versions and device; 2. every method's `aihf train` run in bf16 on a tiny model (implicit,
# self-play, RL, LoRA, two-stage); 3. the test suite on CUDA (AIHF_TEST_DEVICE=cuda, xdist), with a
# per-test log and a summary written even when its time runs out; 4. `aihf bench speed --device cuda`
# (aihf vs TRL DPOTrainer, bf16, a 1B Llama shape); 5. summary.md in RESULTS_DIR.
# Packages the GPU image lacks (trl, datasets, vaderSentiment, gymnasium, ...) are installed from a
# folder of wheels, ${AIHF_WHEELS:-.whl}, that `bash scripts/gpu_wheels.sh` fills on a networked machine.
# On a machine without a CUDA GPU it says so in one line and exits 0.
# Phase time limits (seconds) can be set: AIHF_GPU_CLI_S (45 a run), AIHF_GPU_TESTS_S (200), AIHF_GPU_SPEED_S
# (150); the speed phase's AIHF_GPU_SPEED_SIZES (1b; also 135m) and AIHF_GPU_SPEED_VARIANTS.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no CUDA GPU on this machine (nvidia-smi finds none); nothing to check"
  exit 0
fi

out=${1:-benchmarks/results/gpu/$(date -u +%Y-%m-%d)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRL_TELEMETRY=0 PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
started=$(date +%s)
elapsed() { echo $(( $(date +%s) - started )); }
note() { echo "[gpu_check $(elapsed)s] $*" | tee -a "$out/log.txt"; }

# --- set-up: the wheels the image lacks, into a private folder (nothing outside it is touched)
wheels=${AIHF_WHEELS:-.whl}
if compgen -G "$wheels/*.whl" >/dev/null; then
  note "installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/site" \
    "$wheels"/*.whl >>"$out/log.txt" 2>&1 || note "some wheels failed to install (see log.txt)"
  export PYTHONPATH="$PYTHONPATH:$work/site"
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU visible to torch ($PY); nothing to check"
  exit 0
fi

# --- 1. versions and device
{ "$PY" -m aihf env; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } >"$out/versions.txt" 2>&1
note "versions: $(tr '\n' ' ' <"$out/versions.txt" | cut -c1-300)"

# --- 2. every method's CLI run in bf16, on a tiny model and the quickstart task
cli_status=()
cli() {  # name, then aihf arguments
  local name=$1; shift
  if timeout "${AIHF_GPU_CLI_S:-45}" "$PY" -m aihf "$@" >"$work/$name.log" 2>&1; then
    cli_status+=("| $name | ok |")
  else
    cli_status+=("| $name | FAILED: $(grep -v '^\s*$' "$work/$name.log" | tail -1 | cut -c1-200) |")
    cp "$work/$name.log" "$out/cli_$name.log"
  fi
  note "cli $name: ${cli_status[-1]}"
}
qs="$work/qs"
cli quickstart quickstart --output_dir "$qs" --max_steps 20 --num_demonstrations 200 --num_preferences 200 \
  --num_eval 20
common=(--model_name_or_path "$qs/model" --demonstrations "$qs/data/demonstrations.jsonl"
  --preferences "$qs/data/preferences.jsonl" --bf16 true --report_to none --save_strategy no --max_new_tokens 8)
implicit=(--max_steps 4 --per_device_train_batch_size 8 --learning_rate 1e-4)
rl=(--num_rounds 2 --per_device_train_batch_size 4 --num_generations 2 --reward_batch_size 8 --reward_pretrain_steps 2)
cli aihf train "${common[@]}" "${implicit[@]}" --method aihf --output_dir "$work/aihf"
cli dpo train "${common[@]}" "${implicit[@]}" --method dpo --output_dir "$work/dpo"
cli sft_then_dpo train "${common[@]}" "${implicit[@]}" --method sft_then_dpo --output_dir "$work/sft_then_dpo"
cli self_play train "${common[@]}" "${implicit[@]}" --demo_loss self_play --output_dir "$work/self_play"
cli lora train "${common[@]}" "${implicit[@]}" --use_peft true --lora_r 4 --output_dir "$work/lora"
cli aihf_rl train "${common[@]}" "${rl[@]}" --method aihf_rl --output_dir "$work/aihf_rl"
cli rlhf train "${common[@]}" "${rl[@]}" --method rlhf --output_dir "$work/rlhf"
cli aihf_rl_lora train "${common[@]}" "${rl[@]}" --method aihf_rl --use_peft true --lora_r 4 \
  --reward_use_peft true --output_dir "$work/aihf_rl_lora"

# --- 3. the test suite on CUDA; tests/result_log.py writes one line per test as it finishes, so a
# run stopped by its time limit still leaves its results
tests_s=${AIHF_GPU_TESTS_S:-200}
note "test suite on CUDA (limit ${tests_s}s)"
AIHF_TEST_DEVICE=cuda AIHF_TEST_RESULT_LOG="$out/tests.tsv" timeout -s INT -k 20 "$tests_s" \
  "$PY" -m pytest -q -p no:cacheprovider -p tests.result_log -n "${AIHF_GPU_TEST_WORKERS:-8}" \
  --junitxml="$out/junit.xml" -m "not slow" tests >"$out/tests.log" 2>&1
tests_rc=$?
note "tests: exit $tests_rc; $(cut -f2 "$out/tests.tsv" 2>/dev/null | sort | uniq -c | tr '\n' ' ')"

# --- 4. speed against TRL on the GPU
speed_s=${AIHF_GPU_SPEED_S:-150}
note "speed (limit ${speed_s}s)"
timeout -s INT "$speed_s" "$PY" -m aihf.bench.speed --device cuda --sizes "${AIHF_GPU_SPEED_SIZES:-1b}" \
  --variants "${AIHF_GPU_SPEED_VARIANTS:-trl_dpo,aihf_dpo,aihf_dpo_shared}" --repeats 1 --warmup 3 --steps 10 \
  --pairs 120 --output_dir "$out/speed" >"$out/speed.log" 2>&1
note "speed: exit $?"

# --- 5. summary
{
  echo "# GPU check ($(date -u +%Y-%m-%dT%H:%MZ), $(elapsed) s)"
  echo
  echo '```'; cat "$out/versions.txt"; echo '```'
  echo
  echo "## aihf train in bf16"
  echo
  echo "| run | result |"; echo "|---|---|"
  printf '%s\n' "${cli_status[@]}"
  echo
  echo "## Test suite with AIHF_TEST_DEVICE=cuda (exit $tests_rc; 124/130 = stopped by the time limit)"
  echo
  if [ -f "$out/tests.tsv" ]; then
    echo "| outcome | tests |"; echo "|---|---|"
    cut -f2 "$out/tests.tsv" | sort | uniq -c | awk '{print "| " $2 " | " $1 " |"}'
    echo
    echo "Failed:"; echo
    awk -F'\t' '$2=="failed"{print "- `" $1 "`: " $3}' "$out/tests.tsv"
  else
    echo "no per-test results (see tests.log)"
  fi
  echo
  echo "## Speed (aihf bench speed --device cuda)"
  echo
  if [ -f "$out/speed/speed.md" ]; then sed -n '/^## Ratios/,$p' "$out/speed/speed.md"; else echo "no result (see speed.log)"; fi
} >"$out/summary.md"
note "wrote $out/summary.md"
rm -rf "$work"
