#!/usr/bin/env bash
# Set up, build and run every test: gcc, clang, ASan+UBSan, and the ucontext
# context-switch backend. Exits non-zero on the first failing configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
export CK_VERBOSITY=${CK_VERBOSITY:-normal}

run() { # run NAME MESON-SETUP-ARGS... -- MESON-TEST-ARGS...
  local name=$1; shift
  local setup=() testargs=()
  while (($#)) && [ "$1" != "--" ]; do setup+=("$1"); shift; done
  (($#)) && shift
  testargs=("$@")
  echo "=== $name"
  local dir=build-ci-$name
  [ -d "$dir" ] || meson setup "$dir" "${setup[@]}" >/dev/null
  ninja -C "$dir" >/dev/null
  meson test -C "$dir" --print-errorlogs "${testargs[@]}"
}

run gcc --buildtype=debugoptimized
CC=clang run clang --buildtype=debugoptimized -- --no-suite samples
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  CC=clang run asan -Db_sanitize=address,undefined -Db_lundef=false -- --no-suite samples
run ucontext -Dcoro=ucontext -- --no-suite samples
# ThreadSanitizer for the code that crosses threads (submissions, to_thread,
# executors, debug mode's watchdog); the single-threaded suites only get
# slow under it.
TSAN_OPTIONS=halt_on_error=1 CC=clang run tsan -Db_sanitize=thread -Db_lundef=false -- thread debug
# The AArch64 switch, cross-built and run under qemu-user (skip with
# UVA_SKIP_AARCH64=1 on machines without the arm64 multiarch packages).
if [ "${UVA_SKIP_AARCH64:-0}" != 1 ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO dpkg --add-architecture arm64
  fi
  tools/setup.sh gcc-aarch64-linux-gnu qemu-user libuv1-dev:arm64 check:arm64 libcurl4-openssl-dev:arm64
  run aarch64 --cross-file tools/cross/aarch64.ini -- --no-suite samples --no-suite tools --timeout-multiplier 3
fi
echo "all configurations passed"
