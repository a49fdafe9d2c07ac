#!/usr/bin/env bash
# The GPU half of issue 6: search.bench with the GPU as the device, plus trials packed on one GPU.
#
#   bash benchmarks/gpu_bench.sh [OUT_DIR]
#
# Runs on a machine with torch + CUDA and this repository (Ray, Optuna and MLflow are not needed: only the step
# section runs). Packed trials are separate training processes sharing the GPU, which is what Ray's fractional
# GPU resources (--gpus-per-trial 0.25) give: Ray only sets CUDA_VISIBLE_DEVICES and does not partition the GPU.
set -euo pipefail
out="${1:-${OUT:-results/bench}}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -m search.bench --only step --device cuda --steps 30 --json "$out/step.json" | tee "$out/step.txt"
for n in 4; do
  python -m search.bench --only step --device cuda --steps 30 --packed "$n" --json "$out/packed_$n.json" \
    | tee "$out/packed_$n.txt"
done
