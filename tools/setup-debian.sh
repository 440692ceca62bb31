#!/usr/bin/env bash
# Installs everything gst-ehatsr needs to build, test and run on Debian 12.
set -euo pipefail
pkgs=(
  meson ninja-build pkg-config gcc
  libglib2.0-dev libjson-glib-dev libpng-dev
  libopenblas-dev libopenblas0-pthread
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  python3 python3-numpy python3-pytest python3-torch python3-pil
  valgrind clang-14 libclang-rt-14-dev libomp-14-dev
  slurm-wlm munge
  # ehat-remaster (issue 10): x264, x265 and H.264/H.265 parsers, FFV1 and
  # the libav decoders, timeoverlay for the frame-exact test clips
  gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav
  gstreamer1.0-x
  # Matroska fixtures GStreamer cannot write (track flags) and an
  # independent reader of ehat-remaster's output (mkvmerge -J)
  mkvtoolnix
)
bash "$(dirname "$0")/apt-install-missing.sh" "${pkgs[@]}"
