#!/bin/sh
# Soak benchmark: 10,000 small frames through ehatsr with resident memory
# sampled; see bench/soak/README.md and docs/reliability.md.
#
#   bench/soak/soak.sh                       # CPU, 10,000 frames (~4 min on 2 cores)
#   bench/soak/soak.sh --frames 2000         # shorter
#   bench/soak/soak.sh --backend cuda        # CUDA build on a GPU machine
#
# BUILD (default: build) is a configured and built meson dir; OUT (default:
# bench/soak/results/<backend>-<date>) receives curve.csv, summary.json and
# summary.txt.  Exit status: 0 PASS, 1 FAIL, 2 usage.  Options after the
# script name go to ehat-soak (--help lists them).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${BUILD:-$root/build}
case $build in /*) ;; *) build=$root/$build ;; esac
soak=$build/tests/ehat-soak
if [ ! -x "$soak" ]; then
  echo "soak.sh: $soak not built (meson setup $build && ninja -C $build)" >&2
  exit 2
fi
backend=cpu
prev=
for a in "$@"; do
  [ "$prev" = --backend ] || [ "$prev" = -b ] && backend=$a
  case $a in --backend=*) backend=${a#--backend=} ;; esac
  prev=$a
done
out=${OUT:-$here/results/$backend-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"

export GST_PLUGIN_PATH="$build/gst"
export GST_PLUGIN_SYSTEM_PATH_1_0=
export GST_REGISTRY="$out/registry.bin"
export EHAT_GOLDEN_DIR="${EHAT_GOLDEN_DIR:-$root/../shared/golden}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

set +e
"$soak" --csv "$out/curve.csv" --json "$out/summary.json" "$@" \
  | tee "$out/summary.txt"
rc=$?
set -e
# tee hides the status; the summary has it
grep -q '^result=PASS' "$out/summary.txt" && rc=0 || rc=1
rm -f "$out/registry.bin"
echo "soak.sh: results in $out" >&2
exit $rc
