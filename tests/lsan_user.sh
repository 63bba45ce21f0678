#!/usr/bin/env bash
# A program built with -fsanitize=address against the ordinary shared
# library must get LeakSanitizer's report for a leak made inside a task,
# and no report when it leaks nothing (lib/coro/switch.c says why it did
# not). Builds tests/lsan_user.c with every compiler it finds (the build's
# own, gcc, clang) and runs it in three modes. Exit 77 (skip) where it
# cannot work, with the reason.
# usage: lsan_user.sh SOURCE INCLUDE_DIR LIBUVASYNC_SO B_SANITIZE CROSS UV_INCLUDEDIR CC...
set -u
src=$1 inc=$2 lib=$3 sanitize=$4 cross=$5 uvinc=$6
shift 6
skip() { echo "skipped: $*"; exit 77; }
[ "$cross" = native ] || skip "cross build: the program would run under qemu-user, where LeakSanitizer cannot stop the world"
[ "$sanitize" = none ] || skip "the library itself is built with -fsanitize=$sanitize; this test is about the plain library"
[ -f "$lib" ] || skip "no shared library at $lib"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lsan_user.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
# Not the environment of a sanitized configuration: LSan on, defaults.
unset ASAN_OPTIONS LSAN_OPTIONS
export ASAN_OPTIONS=detect_leaks=1

ccs=("$*" gcc clang)
tried=0 failed=0
declare -A seen
for cc in "${ccs[@]}"; do
  [ -n "$cc" ] || continue
  # "ccache cc" and "cc" are the same compiler as "gcc" often: run each
  # binary name once.
  name=$(basename "${cc##* }")
  real=$(command -v "${cc##* }" 2>/dev/null) || { echo "no $name: skipped"; continue; }
  real=$(readlink -f "$real")
  [ -z "${seen[$real]:-}" ] || continue
  seen[$real]=1
  exe=$tmp/lsan_user-$name
  # shellcheck disable=SC2086
  if ! $cc -fsanitize=address -fno-omit-frame-pointer -g -O1 -I"$inc" -I"$uvinc" "$src" "$lib" \
      -Wl,-rpath,"$(dirname "$lib")" -o "$exe" 2>"$tmp/cc.err"; then
    echo "$name: cannot build with -fsanitize=address (no sanitizer runtime?), skipped:"
    sed 's/^/  /' "$tmp/cc.err" | head -5
    continue
  fi
  # The program must really use the plain library.
  loaded=$(ldd "$exe" | awk '/libuvasync/ { print $3 }')
  if [ -z "$loaded" ] || [ "$(readlink -f "$loaded")" != "$(readlink -f "$lib")" ]; then
    echo "$name: $exe loads '${loaded}', not $lib"; failed=1; continue
  fi
  tried=$((tried + 1))
  for mode in clean held leak; do
    "$exe" "$mode" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if grep -q "LeakSanitizer has encountered a fatal error\|LeakSanitizer does not work under ptrace" "$tmp/err"; then
      skip "LeakSanitizer cannot run here (ptrace restricted?): $(head -3 "$tmp/err")"
    fi
    ok=1
    case $mode in
      clean|held)
        [ $rc -eq 0 ] || ok=0
        grep -q "LeakSanitizer\|ERROR: AddressSanitizer" "$tmp/err" && ok=0 ;;
      leak)
        [ $rc -ne 0 ] || ok=0
        grep -q "Direct leak of 4243 byte(s) in 1 object(s) allocated from" "$tmp/err" || ok=0
        # The allocation's caller is known (before the fix it was not, and
        # LSan hid the leak as "maybe in a coroutine").
        grep -q "#1 .* in leaker " "$tmp/err" || ok=0 ;;
    esac
    if [ $ok = 1 ]; then
      echo "$name $mode: ok (exit $rc)"
    else
      echo "$name $mode: FAILED (exit $rc); stderr:"
      sed 's/^/  /' "$tmp/err"
      failed=1
    fi
  done
done
[ $tried -gt 0 ] || [ $failed = 1 ] || skip "no compiler here can build with -fsanitize=address"
exit $failed
