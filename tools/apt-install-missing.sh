#!/usr/bin/env bash
# apt-install-missing.sh [APT-OPTION...] PKG...: apt-get installs those of
# the packages (arch-qualified names allowed) that are not installed yet,
# as root or through sudo; nothing when all are.  Leading arguments that
# start with '-' go to apt-get install.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
opts=()
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do
  opts+=("$1")
  shift
done
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
    || missing+=("$p")
done
[ ${#missing[@]} -gt 0 ] || exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${opts[@]}" \
  "${missing[@]}"
