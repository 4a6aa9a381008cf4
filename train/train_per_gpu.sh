#!/usr/bin/env bash
# Train every (model, layer) SAE of CONFIG, one process per GPU, a GPU at a time per job.
# bash train/train_per_gpu.sh CONFIG
set -euo pipefail
config=${1:?config}
n_gpus=$(nvidia-smi -L | wc -l)
mapfile -t jobs < <(python -m saematch.jobs "$config")   # lines: MODEL:LAYER
i=0
for job in "${jobs[@]}"; do
  CUDA_VISIBLE_DEVICES=$((i % n_gpus)) python -m saematch.cli train "$config" --only "$job" &
  i=$((i + 1))
  if (( i % n_gpus == 0 )); then wait; fi
done
wait
