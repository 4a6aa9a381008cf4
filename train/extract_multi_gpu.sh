#!/usr/bin/env bash
# Extract activations with N GPUs on one node: bash train/extract_multi_gpu.sh CONFIG N
# Each rank takes shards k % WORLD_SIZE == RANK on its own GPU (device: cuda means the rank's GPU).
set -euo pipefail
config=${1:?config}; n=${2:-$(nvidia-smi -L | wc -l)}
exec torchrun --standalone --nproc-per-node "$n" -m saematch.cli extract "$config" --set device=cuda
