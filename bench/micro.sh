#!/usr/bin/env bash
# Micro-benchmarks of the hot types (routing, breaker, limiter, header rewriting, trace ids):
# time and heap allocations per operation, with ordo-one/benchmark. See Benchmarks/README.md.
#
#   bench/micro.sh                                 every benchmark (~3 minutes once built)
#   bench/micro.sh --filter 'trace.*'              some of them (a regex on the names)
#   bench/micro.sh --filter 'headers.*' --allocation-stacks    where each allocation comes from
#
# Any argument goes to `swift package benchmark`. The first build takes ~6 minutes on 2 cores
# (Breakwater and its dependencies in release mode). Installs nothing: allocations are counted
# by the benchmark package's malloc interposer, so no jemalloc. Figures, not pass/fail; CI does
# not run it.
set -euo pipefail
cd "$(dirname "$0")/.."

# -enable-testing: the benchmarks `@testable import Breakwater` to reach its internal types,
# which a release build otherwise hides.
exec swift package --package-path Benchmarks --scratch-path "$PWD/Benchmarks/.build" \
  -Xswiftc -enable-testing \
  benchmark --no-progress "$@"
