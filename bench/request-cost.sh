#!/usr/bin/env bash
# What one request costs Breakwater in the steady state: instructions (callgrind), heap
# allocations (an LD_PRELOAD counter) and CPU, for a proxied request, a shed one and one refused
# by an open breaker. See bench/request_cost.py and README.md, "Benchmarks".
#
#   bench/request-cost.sh [N] [--floor]    (default N = 500, about a minute after the build)
#
# `--floor` also counts bench/nio-floor in its three modes: the least a proxy on NIO's HTTP/1
# decoders, on llhttp called directly, and on no HTTP at all costs.
#
# Installs what it needs from Debian's packages (valgrind, nginx), builds the release binary,
# and runs a copy stripped of debug info: valgrind 3.19, Debian 12's, cannot read the DWARF 5
# of Swift 6.3 binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
N=500
FLOOR=false
for arg in "$@"; do
  if [[ $arg == --floor ]]; then FLOOR=true; else N=$arg; fi
done
bench/install-missing.sh valgrind:valgrind nginx:nginx-light
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# The binary as the Dockerfile ships it; the build's output only if it fails.
BIN=$(bench/release-build.sh 2>"$WORK/build.log") || { cat "$WORK/build.log" >&2; exit 1; }
gcc -O2 -shared -fPIC -o "$WORK/malloc-count.so" bench/malloc-count.c
strip --strip-debug -o "$WORK/breakwater" "$BIN"

floor=()
if $FLOOR; then
  FLOOR_BIN=$(bench/floor-build.sh 2>"$WORK/floor-build.log") || { cat "$WORK/floor-build.log" >&2; exit 1; }
  strip --strip-debug -o "$WORK/nio-floor" "$FLOOR_BIN"
  floor=(--floor "$WORK/nio-floor")
fi

python3 bench/request_cost.py --breakwater "$WORK/breakwater" --malloc-count "$WORK/malloc-count.so" --requests "$N" "${floor[@]}"
