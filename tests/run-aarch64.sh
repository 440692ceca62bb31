#!/usr/bin/env bash
# libehat, the ehat CLI and the unit tests cross-built for 64-bit Arm
# (Raspberry Pi 4/5, Graviton, Ampere, Apple silicon under Linux) and the
# unit suite run under qemu-user, called from .ci/run.  Unlike
# tests/run-portable.sh, which builds the portable code for x86, this
# compiles with the aarch64 GCC (NEON vectors, aarch64 OpenBLAS, no x86
# probes) and runs the result, so golden parity is checked on the
# instruction set those users have.
#
# Installs what it needs (root, Debian 12): the cross compiler, qemu-user
# and the :arm64 -dev packages (multiarch).  ~2 min on 2 cores once
# installed.
#
# Left out: the element and ehat-remaster (GStreamer, see pkgs); under
# emulation /tiler/golden/psnr and /tiler/shipped (whole Set5 images
# through five golden and both shipped models, tiled and not: over 10 min
# under qemu's float emulation; the native builds run them),
# backend-module's two subprocess cases (below) and the python suite.
#   AARCH64_DIR   build dir   (build-aarch64)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${AARCH64_DIR:-build-aarch64}
cross=tests/cross/aarch64-linux-gnu.ini

# Not GStreamer: Debian 12's libgstreamer-plugins-base1.0-dev cannot be
# installed for two architectures, and its :arm64 would remove the native
# one (hence also --no-remove below).
pkgs=(gcc-aarch64-linux-gnu qemu-user libglib2.0-dev:arm64
  libjson-glib-dev:arm64 libpng-dev:arm64 libopenblas-dev:arm64)
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo dpkg --add-architecture arm64
fi
bash tools/apt-install-missing.sh --no-remove "${pkgs[@]}"

. tests/build-dir.sh
build_dir "$dir" --cross-file "$cross" -Dgst=disabled -Dcuda=disabled \
  -Dcuda-emu=disabled -Dfuzzing=false
aarch64-linux-gnu-readelf -h "$dir/ehat-core/ehat" | grep -q AArch64 || {
  echo "run-aarch64: $dir/ehat-core/ehat is not an aarch64 program" >&2
  exit 1
}
# The unit suite; of the tiler's tests, those that finish in seconds here.
mapfile -t unit < <(meson test -C "$dir" --list --suite unit \
  --no-suite python 2>/dev/null | sed -n 's|^[^ ]*:unit / ||p' \
  | grep -vx -e tiler -e backend-module)
meson test -C "$dir" "${unit[@]}" --print-errorlogs --num-processes 2 \
  --timeout-multiplier 4
# (one path per run: GLib 2.74 prints a TAP plan per -p, which meson
# rejects)
for t in layout-weights fake-sizes whole-frame-when-small invalid ensemble \
  oom-error auto-size-from-memory golden/small; do
  meson test -C "$dir" tiler --print-errorlogs --timeout-multiplier 4 \
    "--test-args=-p /tiler/$t"
done
# g_test_trap_subprocess re-executes the test program itself, which needs
# binfmt_misc to run an aarch64 binary; CI containers have none.
meson test -C "$dir" backend-module --print-errorlogs \
  '--test-args=-s /module/engine-bogus/garbage -s /module/engine-bogus/stale'
