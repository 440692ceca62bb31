#!/bin/bash
# `meson devenv` (gst/meson.build): from the build tree, without the
# caller's GST_PLUGIN_PATH or EHATSR_MODEL, gst-launch-1.0 finds ehatsr
# and its default model (the shipped ×2 in the source tree) and upscales.
#   devenv.sh MESON BUILD_DIR SOURCE_DIR
set -euo pipefail
meson=$1 build=$2 src=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unset GST_PLUGIN_PATH EHATSR_MODEL
export GST_REGISTRY=$tmp/registry.bin

"$meson" devenv -C "$build" gst-inspect-1.0 ehatsr >"$tmp/inspect.txt"
want="$src/models/ehat-fast-x2.safetensors"
grep -F -q "Default: \"$want\"" "$tmp/inspect.txt" || {
  echo "devenv: the model property's default is not $want:" >&2
  grep -A3 '^  model ' "$tmp/inspect.txt" >&2
  exit 1
}
# a 32×24 frame through the default model: 64×48 out, or caps fail
"$meson" devenv -C "$build" gst-launch-1.0 -q videotestsrc num-buffers=1 \
  ! video/x-raw,format=RGB,width=32,height=24 ! ehatsr \
  ! video/x-raw,width=64,height=48 ! fakesink
echo "devenv: ehatsr and its default model from the build tree"
