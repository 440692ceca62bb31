#!/usr/bin/env bash
# The CPU backend as it is built for CPUs other than x86-64 (aarch64, …),
# called from .ci/run: a build with -DEHAT_NO_CLONES, which leaves out the
# x86 kernels and the clones, so that everything runs on the portable code
# with ehat-cpu.h's 4-lane vectors (NEON's width; the CI machine runs them
# as SSE), OpenBLAS for the GEMMs; then its unit suite (golden parity
# included).  ~3 min on 2 cores.
#   PORTABLE_DIR   build dir   (build-portable)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${PORTABLE_DIR:-build-portable}
. tests/build-dir.sh
build_dir "$dir" -Dc_args=-DEHAT_NO_CLONES -Dgst=disabled -Dcuda=disabled \
  -Dcuda-emu=disabled -Dfuzzing=false
meson test -C "$dir" --suite unit --no-suite python --print-errorlogs \
  --num-processes 2
