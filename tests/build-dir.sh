# Sourced by the tests/run-*.sh scripts: build_dir DIR MESON-ARGS...
# configures DIR (or reconfigures it when it exists) and builds it.
build_dir() {
  local dir=$1
  shift
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
  ninja -C "$dir" >/dev/null
}
