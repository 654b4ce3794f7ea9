#!/usr/bin/env bash
# Builds Breakwater as the Dockerfile ships it and prints the binary's path: release, the Swift
# runtime linked in statically (5 MB less resident memory than loading the shared libraries),
# and link-time optimised across every module, NIO's included (about 8% fewer instructions per
# request; see README.md, "Benchmarks"). A scratch path of its own, so the development build in
# .build is left alone. Progress goes to stderr.
#
#   bin=$(bench/release-build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
build=(swift build -c release --product breakwater --static-swift-stdlib
       --experimental-lto-mode=full --scratch-path .build-release)
"${build[@]}" >&2
echo "$("${build[@]}" --show-bin-path)/breakwater"
