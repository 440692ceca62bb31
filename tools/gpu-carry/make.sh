#!/bin/bash
# Prepares .gpu/ (git-excluded) for the device tool's `run`: what a bare GPU machine needs to
# run this checkout's build tree without meson or Debian packages there.
#
#   tools/gpu-carry/make.sh [BUILD_DIR]       # default build; then, on the device:
#   run(carry=[".gpu"], command="source .gpu/setup.sh; python3 .gpu/run.py cuda backend-module")
#   run(carry=[".gpu"], command="bash tools/gpu-carry/pending.sh")   # every check still owed
#
# .gpu/ holds: lib.tar.xz (the Debian libraries the build links, libc and CUDA excepted: the
# device has its own), build.tar.xz (the build tree without objects; its absolute paths hold
# because setup.sh links the device's copy to this checkout's path), shared/golden (and the
# test image the CUDA suite reads), tests.json (`meson introspect --tests`: run.py runs tests by
# name with meson's environment; the device's meson is newer than the build tree's), run.py,
# setup.sh; gst/ (the GStreamer plugins ehat-remaster and the element need, with
# gst-launch-1.0, gst-inspect-1.0 and the plugin scanner: the device has no GStreamer);
# install.tar.xz (`meson install --destdir`: pending.sh checks the installed CUDA module).
# About 35 MiB (2026-12-06), well inside the 64 MiB a call carries.
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
# the GStreamer side: decode (the sample clip is WebM/VP8), convert, the encoders ehat-remaster
# offers on a GPU machine (x264, NVENC) and the muxers/parsers around them
gstlib=$(pkg-config --variable=pluginsdir gstreamer-1.0)
scanner=$(pkg-config --variable=pluginscannerdir gstreamer-1.0)/gst-plugin-scanner
mkdir -p .gpu/gst/plugins .gpu/gst/bin
for p in coreelements playback typefindfunctions matroska videoconvertscale app videoparsersbad \
    x264 nvcodec vpx; do
  cp "$gstlib/libgst$p.so" .gpu/gst/plugins/
done
cp "$scanner" "$(command -v gst-launch-1.0)" "$(command -v gst-inspect-1.0)" .gpu/gst/bin/
for b in "$build"/tests/test-cuda "$build"/kernels/module/libehat-cuda.so "$build"/ehat-core/ehat \
    "$build"/tests/test-backend-module "$build"/gst/libgstehatsr.so \
    "$build"/gst/remaster/ehat-remaster .gpu/gst/plugins/*.so .gpu/gst/bin/*; do
  [ -e "$b" ] && ldd "$b"
done | awk '$3 ~ /^\// {print $3}' | sort -u \
  | grep -v -e 'libc\.so' -e 'libm\.so' -e 'libstdc' -e 'libgcc_s' -e 'libz\.so' -e 'libdl' \
      -e 'libpthread' -e 'librt' -e cuda -e "$root" \
  | while read -r l; do cp -L "$l" .gpu/lib/; done
tar cJf .gpu/lib.tar.xz -C .gpu lib && rm -rf .gpu/lib
tar cJf .gpu/build.tar.xz --exclude='*.p' --exclude=meson-logs --exclude=meson-private \
  --exclude='*.o' --exclude='*.a' "$build"
# pending.sh's remaster clip: 4 s at 960×540, a keyframe a second, frame times burnt in
gst-launch-1.0 -q videotestsrc num-buffers=96 pattern=ball ! \
  video/x-raw,width=960,height=540,framerate=24/1 ! timeoverlay ! videoconvert ! \
  vp8enc deadline=1 keyframe-max-dist=24 ! webmmux ! filesink location=.gpu/clip-960x540.webm
meson introspect "$build" --tests > .gpu/tests.json
rm -rf .gpu/install && meson install -C "$build" --no-rebuild --quiet --destdir "$root/.gpu/install" >/dev/null
tar cJf .gpu/install.tar.xz -C .gpu/install usr && rm -rf .gpu/install
du -sh .gpu
