#!/usr/bin/env bash
# Train every (model, layer) SAE of CONFIG, one SAE per GPU at a time, on one node:
#   bash train/train_per_gpu.sh CONFIG [N_GPUS]
# Extraction first (sharded over the same ranks), then the graph's train nodes split over torchrun ranks:
# rank r of W builds jobs r, r + W, ... on its own GPU (LOCAL_RANK).
set -euo pipefail
config=${1:?config}; n=${2:-$(nvidia-smi -L | wc -l)}
torchrun --standalone --nproc-per-node "$n" -m saematch.cli extract "$config"
exec torchrun --standalone --nproc-per-node "$n" -m saematch.jobs "$config" --stage train --build
