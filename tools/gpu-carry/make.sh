#!/bin/bash
# Prepares .gpu/ (git-excluded) for the device tool's `run`: what a bare GPU machine needs to
# run this checkout's build tree without meson or Debian packages there.
#
#   tools/gpu-carry/make.sh [BUILD_DIR]       # default build; then, on the device:
#   run(carry=[".gpu"], command="source .gpu/setup.sh; python3 .gpu/run.py cuda backend-module")
#
# .gpu/ holds: lib.tar.xz (the Debian libraries the build links, libc and CUDA excepted: the
# device has its own), build.tar.xz (the build tree without objects; its absolute paths hold
# because setup.sh links the device's copy to this checkout's path), shared/golden (and the
# test image the CUDA suite reads), tests.json (`meson introspect --tests`: run.py runs tests by
# name with meson's environment; the device's meson is newer than the build tree's), run.py,
# setup.sh.  About 20 MiB, well inside the 64 MiB a call carries.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build}
cd "$root"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu/' >> .git/info/exclude; }
rm -rf .gpu && mkdir -p .gpu/lib .gpu/shared
cp tools/gpu-carry/run.py tools/gpu-carry/setup.sh .gpu/
sed -i "s|^CHECKOUT=.*|CHECKOUT=$root|; s|^SHARED=.*|SHARED=$(cd "$root/../shared" && pwd)|" .gpu/setup.sh
cp -r ../shared/golden .gpu/shared/
img=eval/Set5/LR_bicubic/X2/butterflyx2.png
mkdir -p ".gpu/shared/data/$(dirname $img)" && cp "../shared/data/$img" ".gpu/shared/data/$img"
for b in "$build"/tests/test-cuda "$build"/kernels/module/libehat-cuda.so "$build"/ehat-core/ehat \
    "$build"/tests/test-backend-module "$build"/gst/libgstehatsr.so; do
  [ -e "$b" ] && ldd "$b"
done | awk '$3 ~ /^\// {print $3}' | sort -u \
  | grep -v -e 'libc\.so' -e 'libm\.so' -e 'libstdc' -e 'libgcc_s' -e 'libz\.so' -e 'libdl' \
      -e 'libpthread' -e 'librt' -e cuda -e "$root" \
  | while read -r l; do cp -L "$l" .gpu/lib/; done
tar cJf .gpu/lib.tar.xz -C .gpu lib && rm -rf .gpu/lib
tar cJf .gpu/build.tar.xz --exclude='*.p' --exclude=meson-logs --exclude=meson-private \
  --exclude='*.o' --exclude='*.a' "$build"
meson introspect "$build" --tests > .gpu/tests.json
du -sh .gpu
