#!/usr/bin/env bash
# Train the fastMRI knee score prior (the original named a config that did not exist).
#
#   DATA_ROOT=/data/fastmri/knee WORKDIR=runs/knee NPROC=1 ./train_fastmri_knee.sh [extra absl flags]
#
# DATA_ROOT  folder of fastMRI .h5 volumes or of per-slice .npy/.png images (config.data.root)
# WORKDIR    checkpoints, stdout.txt, samples (default: runs/fastmri_knee_320_ncsnpp_continuous)
# CONFIG     config file (default: configs/ve/fastmri_knee_320_ncsnpp_continuous.py)
# NPROC      processes (> 1: torchrun --standalone --nproc_per_node NPROC; gloo on CPU, nccl on GPU)
# N_ITERS    training steps (config.training.n_iters; default 0 = config.training.epochs passes)
# Extra arguments are passed to main_fastmri.py, e.g. --config.training.batch_size=2 --mode=eval.
set -euo pipefail
cd "$(dirname "$0")"

CONFIG=${CONFIG:-configs/ve/fastmri_knee_320_ncsnpp_continuous.py}
WORKDIR=${WORKDIR:-runs/fastmri_knee_320_ncsnpp_continuous}
NPROC=${NPROC:-1}
PYTHON=${PYTHON:-python}

args=(--config="$CONFIG" --workdir="$WORKDIR")
if [[ -n "${DATA_ROOT:-}" ]]; then
    args+=(--config.data.root="$DATA_ROOT")
fi
if [[ -n "${N_ITERS:-}" ]]; then
    args+=(--config.training.n_iters="$N_ITERS")
fi

if [[ "$NPROC" -gt 1 ]]; then
    exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" main_fastmri.py "${args[@]}" "$@"
else
    exec "$PYTHON" main_fastmri.py "${args[@]}" "$@"
fi
