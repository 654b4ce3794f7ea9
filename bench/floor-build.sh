#!/usr/bin/env bash
# Builds bench/nio-floor as bench/release-build.sh builds Breakwater (release, the Swift runtime
# linked statically, full link-time optimisation) and prints the binary's path. Progress goes
# to stderr.
#
#   floor=$(bench/floor-build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
build=(swift build -c release --static-swift-stdlib --experimental-lto-mode=full
       --package-path bench/nio-floor --scratch-path bench/nio-floor/.build-release)
"${build[@]}" >&2
echo "$("${build[@]}" --show-bin-path)/nio-floor"
