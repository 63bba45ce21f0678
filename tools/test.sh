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
echo "all configurations passed"
