#!/usr/bin/env bash
# Every GPU-side check, in one short run on a lent GPU machine (a few minutes): prints JSON lines.
#   benchmarks/gpu_check.sh   (repository root; a venv with a CUDA build of torch: README "CUDA")
# 1. trial packing: 4 trials at gpu: 0.25 against one alone (docs/cluster.md, "Trial resources").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 420 "$PY" -m benchmarks.trial_packing search_spaces/task_ratio.yaml --device gpu --share 4 --steps 60
