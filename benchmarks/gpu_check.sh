#!/usr/bin/env bash
# Every GPU-side check, in one short run on a lent GPU machine (under 5 minutes): prints JSON lines.
#   benchmarks/gpu_check.sh   (repository root; a venv with a CUDA build of torch: README "CUDA")
# 1. trial packing: 4 trials at gpu: 0.25 against one alone (docs/cluster.md, "Trial resources").
# 2. a real-size DMD cycle: a 1B Qwen-Image transformer at 512² (1024 latent tokens), bf16, adapter mode
#    (and full-copy mode, for the memory comparison): cycle time, peak memory, MFU (docs/worlds.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 150 "$PY" -m benchmarks.trial_packing search_spaces/task_ratio.yaml --device gpu --share 4 --steps 30
for mode in adapter full; do
  timeout 50 "$PY" -m benchmarks.real_world_step --size 1b --device cuda --dtype bfloat16 --mode "$mode" \
    --batch 4 --critic-updates 5 --cycles 3 --peak-tflops 989
done
timeout 40 "$PY" -m benchmarks.real_world_step --size 1b --device cuda --dtype bfloat16 --mode adapter \
  --batch 4 --critic-updates 5 --cycles 3 --peak-tflops 989 --gradient-checkpointing
