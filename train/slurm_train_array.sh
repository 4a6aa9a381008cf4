#!/usr/bin/env bash
#SBATCH --job-name=saematch-sae
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
# One SAE per array task: sbatch --array=0-(N-1) train/slurm_train_array.sh CONFIG
set -euo pipefail
config=${1:?config}
mapfile -t jobs < <(python -m saematch.jobs "$config")
exec python -m saematch.cli train "$config" --only "${jobs[$SLURM_ARRAY_TASK_ID]}"
