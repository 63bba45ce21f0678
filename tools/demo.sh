#!/usr/bin/env bash
# Set up, build, and run the demo: until the HTTP client lands, the gather and
# producer/consumer samples (asyncio's seed programs, in C).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
[ -d build ] || meson setup build --buildtype=debugoptimized >/dev/null
ninja -C build >/dev/null
for s in gather producer_consumer; do
  echo "=== samples/$s.c"
  "build/samples/$s"
done
