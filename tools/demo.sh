#!/usr/bin/env bash
# Set up, build, and run the demo: the crawler sample (samples/crawler.c)
# against a generated web site served on 127.0.0.1 (tools/demo/site.c), once
# one page at a time and then concurrently, with the time each run took.
# Extra arguments go to the demo (--pages N, --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh libgumbo-dev
[ -d build ] || meson setup build --buildtype=debugoptimized >/dev/null
# a build directory configured before gumbo (or the demo) was there lacks them
targets=$(ninja -C build -t targets all)
grep -q '^samples/crawler:' <<<"$targets" && grep -q '^tools/demo/demo:' <<<"$targets" ||
  meson setup --reconfigure build >/dev/null
ninja -C build samples/crawler tools/demo/demo >/dev/null
exec build/tools/demo/demo --crawler build/samples/crawler "$@"
