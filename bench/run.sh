#!/usr/bin/env bash
# Breakwater against nginx and HAProxy on this machine, in one run: throughput, CPU per
# request, latency, memory and the cost of a fast refusal. See README.md, "Benchmarks".
#
#   bench/run.sh [--rounds N] [--seconds S] [--floor]
#
# Defaults: 3 rounds of 10 s runs, about 6 minutes. `--floor` also builds and measures
# bench/nio-floor in its three modes, the least a proxy on NIO's HTTP/1 decoders, on llhttp
# called directly, and on no HTTP at all costs (about twice as long).
#
# Installs what it needs from Debian's packages (nginx, haproxy, wrk, h2load), builds the
# release binary, and prints medians and ratios. Figures, not pass/fail; CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."

bench/install-missing.sh nginx:nginx-light haproxy:haproxy wrk:wrk h2load:nghttp2-client taskset:util-linux

args=()
for arg in "$@"; do
  if [[ $arg == --floor ]]; then
    args+=(--floor "$(bench/floor-build.sh)")
  else
    args+=("$arg")
  fi
done
bin=$(bench/release-build.sh)   # the binary as the Dockerfile ships it
exec python3 bench/compare.py --breakwater "$bin" "${args[@]}"
