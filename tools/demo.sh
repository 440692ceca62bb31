#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install, build, and upscale the
# bundled sample clip ×2 through a real gst-launch-1.0 pipeline with the
# bundled default model (CUDA when a device is there, else the CPU).
#   bash tools/demo.sh [OUTPUT.webm]
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/setup-debian.sh
[ -d build ] || meson setup build
ninja -C build

out=${1:-cockatoo-upscaled.webm}
model=${EHATSR_MODEL:-models/ehat-fast-x2.safetensors}
export GST_PLUGIN_PATH="$PWD/build/gst${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"

start=$(date +%s.%N)
gst-launch-1.0 -e \
  filesrc location=samples/cockatoo-320x180.webm ! decodebin ! videoconvert ! \
  ehatsr model="$model" backend=auto ! videoconvert ! \
  vp8enc deadline=1 target-bitrate=4000000 ! webmmux ! filesink location="$out"
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" -v o="$out" 'BEGIN { printf "wrote %s in %.1f s\n", o, e - s }'
