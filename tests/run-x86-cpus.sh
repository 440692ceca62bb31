#!/usr/bin/env bash
# The release build's CPU backend as it runs on older x86 CPUs, called
# from .ci/run after the main suite: the unit tests that exercise the
# kernels (ops, golden, frame, resample, backend-module) run under
# qemu-user with the CPUID of
#   - Haswell (AVX2 + FMA, no AVX-512: most laptops, AMD before Zen 4):
#     the x86-64-v3 clones, the AVX2 GEMM, attention, narrow-convolution
#     and Winograd kernels, OpenBLAS's Haswell kernels; and golden-portable
#     (OpenBLAS and the portable attention, as with EHAT_CPU_NO_AVX2);
#   - Nehalem (SSE4.2, no AVX): the baseline clones and OpenBLAS's Nehalem
#     kernels.
# On the CI machine (AVX-512) the native runs pick the AVX-512 clones and
# kernels; the -avx2 and -portable tests only turn the hand-written
# kernels off.  Here the dispatch itself sees those CPUs, and an
# instruction they lack would fault.  qemu's TCG runs the tests 20-50×
# slower than natively; the tiler's image-sized cases are left out.
#
# Needs the build of .ci/run (BUILDDIR, default build) and qemu-user
# (installed if missing; Debian 12).  ~3 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BUILDDIR:-build}
bash tools/apt-install-missing.sh qemu-user

# Haswell's CPUID without the features TCG cannot give (it warns about
# each on every start otherwise).
haswell=Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm
status=0
# OpenBLAS must pick its kernels from the CPUID qemu gives: a core type the
# environment forces (this project's machines set OPENBLAS_CORETYPE=Haswell)
# would run AVX2 kernels under -cpu Nehalem and fault
unset OPENBLAS_CORETYPE

# CPU WANT TESTS...: the CPU backend under qemu -cpu CPU must describe
# itself as matching WANT (a grep -E pattern), then the tests run there.
run_on() {
  local cpu=$1 want=$2 name=${1%%,*}
  shift 2
  local desc
  desc=$(qemu-x86_64 -cpu "$cpu" "$dir/ehat-core/ehat" bench --backend cpu \
    --model models/ehat-fast-x2.safetensors --size 8x8 --warmup 0 \
    --repeat 1 | sed -n 's/^backend *//p')
  echo "== $name: $desc"
  if ! grep -qE "$want" <<<"$desc"; then
    echo "run-x86-cpus: under -cpu $name the backend is not /$want/" >&2
    status=1
    return
  fi
  meson test -C "$dir" --no-rebuild --wrapper "qemu-x86_64 -cpu $cpu" \
    --logbase "qemu-${name,,}" --print-errorlogs --num-processes 2 \
    --timeout-multiplier 4 "$@" || status=1
}

run_on "$haswell" 'Haswell .*fp32 AVX2\)$' ops golden golden-portable frame \
  resample backend-module
run_on Nehalem 'Nehalem .*fp32\)$' ops golden frame resample
exit $status
