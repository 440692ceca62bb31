# Sourced on the device from the repository root: puts this copy where the build tree expects
# the checkout (CHECKOUT) and the shared data (SHARED, from .gpu/shared), unpacks the libraries
# and the build tree, and sets the paths.  make.sh fills in the two paths.
CHECKOUT=/work/main
SHARED=/work/shared
R=$PWD
# on the machine that made .gpu (a dry run of pending.sh) the paths are real already
if [ "$R" != "$CHECKOUT" ]; then
  mkdir -p "$(dirname "$CHECKOUT")" "$(dirname "$SHARED")"
  # only links are ever replaced: on a machine where these paths are real folders nothing is
  # touched
  for p in "$CHECKOUT" "$SHARED"; do
    if [ -e "$p" ] && [ ! -L "$p" ]; then
      echo "setup.sh: $p is a real folder here; source this on the device machine" >&2
      return 1 2>/dev/null || exit 1
    fi
  done
  ln -sfn "$R" "$CHECKOUT"
  ln -sfn "$R/.gpu/shared" "$SHARED"
  # the tests also reach it as <checkout>/../shared
  [ -e "$R/../shared" ] || ln -sfn "$R/.gpu/shared" "$R/../shared"
fi
[ -d .gpu/lib ] || tar xJf .gpu/lib.tar.xz -C .gpu
[ -d build ] || tar xJf .gpu/build.tar.xz
export LD_LIBRARY_PATH=$R/.gpu/lib:/usr/local/cuda/lib64
export PATH=$PATH:/usr/local/cuda/bin
export EHAT_BACKEND_PATH=$R/build/kernels/module
# GStreamer from .gpu/gst only (the device has none): its own registry, scanner and plugins,
# and the element from the build tree
export PATH=$R/.gpu/gst/bin:$PATH
export GST_PLUGIN_SYSTEM_PATH_1_0=$R/.gpu/gst/plugins
export GST_PLUGIN_SCANNER_1_0=$R/.gpu/gst/bin/gst-plugin-scanner
export GST_PLUGIN_PATH_1_0=$R/build/gst
export GST_REGISTRY_1_0=/tmp/ehat-gst-registry.bin
