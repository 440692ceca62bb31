#!/bin/bash
# On the device machine: trains one of the fast models on .gpu-train/data (packed here by
# tools/gpu-carry/pack-train.py), resuming from .gpu-train/work-xSCALE when a checkpoint is
# there, for at most CALL_MINUTES of this call within a schedule of TOTAL_MINUTES, and leaves
# the EMA model and the checkpoint in $OUT (copy the checkpoint back into
# .gpu-train/work-xSCALE/checkpoint.pt to continue in the next call).
#
#   bash tools/gpu-carry/train.sh SCALE TOTAL_MINUTES CALL_MINUTES [tools/train.py options]
#   e.g. bash tools/gpu-carry/train.sh 2 24 8 --init models/ehat-fast-x2.safetensors \
#            --patch 64 --batch 32 --lr 5e-4
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,11p "$0"; exit 2; }
scale=$1 total=$2 call=$3
shift 3
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${EHAT_TRAIN_DIR:-$root/.gpu-train}
work=$dir/work-x$scale
out=${OUT:-$dir/out}
device=${EHAT_TRAIN_DEVICE:-cuda}
mkdir -p "$work" "$out"
[ -d "$dir/data" ] || { echo "train.sh: no $dir/data (pack-train.py, carry .gpu-train)" >&2; exit 1; }
# SIGTERM at the end of the call: train.py finishes the iteration, checkpoints and saves the
# EMA model; the schedule (cosine over TOTAL_MINUTES) goes on at the next --resume
rc=0
PYTHONUNBUFFERED=1 timeout -s TERM "${call}m" "${PYTHON:-python3}" "$root/tools/train.py" --device "$device" \
  --scale "$scale" --embed-dim 48 --depths 2,2 --heads 4 --window 8 --compress-ratio 3 \
  --squeeze-factor 16 --train "$dir/data" --cache /tmp/ehat-train-cache \
  --work "$work" --resume --minutes "$total" --val-minutes 0 --eval-sets "" --ckpt-minutes 2 \
  --name "ehat-fast-x$scale" -o "$out/ehat-fast-x$scale.safetensors" "$@" || rc=$?
[ $rc -eq 124 ] && rc=0  # timeout: the call ended as planned
cp "$work/checkpoint.pt" "$out/checkpoint-x$scale.pt"
ls -l "$out"
exit $rc
