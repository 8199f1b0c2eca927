#!/usr/bin/env bash
# The main job on the built-in default task (offline, ~1 minute on 2 CPU cores), after setting
# up .venv. Extra arguments go to `aihf quickstart` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/aihf quickstart "$@"
