#!/usr/bin/env bash
# Install what uvasync needs to build and test, only when missing (Debian 12).
set -euo pipefail
pkgs=(build-essential pkg-config meson ninja-build libuv1-dev check clang libclang-rt-dev libcurl4-openssl-dev
      libgumbo-dev nginx-light openssl valgrind)
pkgs+=("$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
