# Sourced on the device from the repository root: puts this copy where the build tree expects
# the checkout (CHECKOUT) and the shared data (SHARED, from .gpu/shared), unpacks the libraries
# and the build tree, and sets the paths.  make.sh fills in the two paths.
CHECKOUT=/work/main
SHARED=/work/shared
R=$PWD
mkdir -p "$(dirname "$CHECKOUT")" "$(dirname "$SHARED")"
# only links are ever replaced: on a machine where these paths are real folders (this one,
# where make.sh ran) nothing is touched
for p in "$CHECKOUT" "$SHARED"; do
  if [ -e "$p" ] && [ ! -L "$p" ] && [ "$p" != "$R" ]; then
    echo "setup.sh: $p is a real folder here; source this on the device machine" >&2
    return 1 2>/dev/null || exit 1
  fi
done
[ "$R" = "$CHECKOUT" ] || ln -sfn "$R" "$CHECKOUT"
ln -sfn "$R/.gpu/shared" "$SHARED"
# the tests also reach it as <checkout>/../shared
[ -e "$R/../shared" ] || ln -sfn "$R/.gpu/shared" "$R/../shared"
[ -d .gpu/lib ] || tar xJf .gpu/lib.tar.xz -C .gpu
[ -d build ] || tar xJf .gpu/build.tar.xz
export LD_LIBRARY_PATH=$R/.gpu/lib:/usr/local/cuda/lib64
export PATH=$PATH:/usr/local/cuda/bin
export EHAT_BACKEND_PATH=$R/build/kernels/module
