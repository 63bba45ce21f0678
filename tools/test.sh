#!/usr/bin/env bash
# Set up, build and run every test: gcc, valgrind memcheck, clang,
# ASan+UBSan, the ucontext context-switch backend, TSan, AArch64 under qemu.
# Exits non-zero on the first failing configuration, and says which.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
export CK_VERBOSITY=${CK_VERBOSITY:-normal}
current=setup
trap 'rc=$?; [ $rc -eq 0 ] || echo "=== configuration $current FAILED (exit $rc)" >&2' EXIT

run() { # run NAME MESON-SETUP-ARGS... -- MESON-TEST-ARGS...
  local name=$1; shift
  local setup=() testargs=()
  while (($#)) && [ "$1" != "--" ]; do setup+=("$1"); shift; done
  (($#)) && shift
  testargs=("$@")
  echo "=== $name"
  current=$name
  local dir=build-ci-$name t0=$SECONDS
  [ -d "$dir" ] || meson setup "$dir" "${setup[@]}" >/dev/null
  ninja -C "$dir" >/dev/null
  meson test -C "$dir" --print-errorlogs "${testargs[@]}"
  echo "=== $name: $((SECONDS - t0)) s"
}

run gcc --buildtype=debugoptimized
# Valgrind memcheck, on the gcc build above (nothing to build again): every
# invalid access or definite leak fails the test it happens in (Check forks
# each test; valgrind follows a fork without exec, and --error-exitcode
# turns the child's errors into a failed test). Programs the tests exec
# (uvfetch, the crawler, sh, nginx) are not traced. The coroutine stacks
# are registered with valgrind by lib/coro. Valgrind runs the suite ~5-10x
# slower: CK_TIMEOUT_MULTIPLIER and --timeout-multiplier give the headroom.
# Measured on the 2-CPU VM, seconds per suite, quiet / with two CPU hogs:
#   future 2.6/4.9, task 7.2/13, timer 19/32, loop 3.0/5.0, combine 19/31,
#   sync 6.5/13, queue 9.7/22, fs 4.6/7.6, dns 3.6/6.5, net 8.5/15,
#   signal 1.7/3.0, process 2.4/4.5, http 44/102, http_stream 16/32,
#   http_edges 11/25, http_tls 9.4/28, uvfetch 7.3/18, crawler 9.7/19,
#   demo 1.6/3.2; this step: 97 s / 203 s of wall time. The whole CI from a
#   clean clone with the hogs on: 838 s.
#   thread 21 (quiet, with TSan's own run below too).
# Not under valgrind:
#   stack: its overflow tests fault on purpose in child processes, and a
#     fault is a memcheck error (Invalid read) by definition.
#   lsan: it builds and runs programs with AddressSanitizer, which cannot
#     run under valgrind.
#   samples: they assert on wall-clock time by design (cancel: the run takes
#     1.05-1.7 s, ...), which valgrind's slowness is not for; they do pass
#     today, 1.6-6.2 s each, 52 s for the 16.
vg_tests=(future task timer loop thread combine sync queue fs dns net signal process
          http http_stream http_edges http_tls uvfetch crawler demo)
echo "=== valgrind"
current=valgrind t0=$SECONDS
CK_TIMEOUT_MULTIPLIER=4 meson test -C build-ci-gcc --print-errorlogs --timeout-multiplier 4 \
  --wrapper "valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
             --show-leak-kinds=definite --track-fds=no --trace-children=no" \
  --no-suite samples "${vg_tests[@]}"
echo "=== valgrind: $((SECONDS - t0)) s"
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
current=none
echo "all configurations passed in $SECONDS s"
