#!/usr/bin/env bash
# Builds Breakwater's libFuzzer targets and runs each for a while.
#
#   fuzz/run.sh            # the CI smoke: 10 seconds per target
#   fuzz/run.sh 600        # the long run: 10 minutes per target
#   fuzz/run.sh 60 FuzzConfig    # one target
#
# Needs only the Swift toolchain (its clang runtime has libFuzzer and AddressSanitizer) on
# Linux. Crashes, timeouts and leaks are written to fuzz-artifacts/ at the top of the
# repository and make the script exit non-zero; each run's log is there too. Inputs that found
# new coverage are kept in fuzz/.build/corpus/ (not committed) so the next run starts from them;
# the committed seeds and regressions are in fuzz/corpus/. See fuzz/README.md.
set -euo pipefail

seconds="${1:-10}"
targets="${2:-FuzzRequest FuzzConfig}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
artifacts="$root/fuzz-artifacts"
scratch="$here/.build"   # never the main package's .build: other flags, other products
mkdir -p "$artifacts"

if [ "$(uname -s)" != "Linux" ]; then
  echo "fuzz/run.sh: libFuzzer via -sanitize=fuzzer needs Swift on Linux" >&2
  exit 2
fi
command -v swift >/dev/null || { echo "fuzz/run.sh: swift is not on PATH" >&2; exit 2; }

# The same dependency versions as the main package, when it has resolved them.
if [ -f "$root/Package.resolved" ]; then
  cp "$root/Package.resolved" "$here/Package.resolved"
fi

# Every Swift module (Breakwater, NIO, the targets) gets libFuzzer's coverage instrumentation
# and AddressSanitizer, and so does the C and C++ code (NIO's llhttp parser, toml++), so the
# fuzzer sees the parsers' branches too. A debug build: `@testable import Breakwater` needs
# testability, and the assertions stay on.
echo "== building the fuzz targets (log: $artifacts/build.log)"
if ! swift build --package-path "$here" --scratch-path "$scratch" -c debug \
  -Xswiftc -sanitize=fuzzer,address \
  -Xcc -fsanitize=fuzzer-no-link,address \
  -Xcxx -fsanitize=fuzzer-no-link,address \
  >"$artifacts/build.log" 2>&1; then
  grep -v "Cannot export local symbol" "$artifacts/build.log" | tail -40 >&2
  echo "fuzz/run.sh: build failed" >&2
  exit 2
fi
bin="$(swift build --package-path "$here" --scratch-path "$scratch" -c debug --show-bin-path)"

# FUZZ_LEAKS=0 switches LeakSanitizer off (it checks every input, which is slow).

# FUZZ_KEEP_GOING=1 (for long runs): libFuzzer's fork mode, which records each crash, timeout
# or out-of-memory in fuzz-artifacts/ and carries on, so one run can find several bugs.
keep_going=()
if [ "${FUZZ_KEEP_GOING:-0}" = 1 ]; then
  keep_going=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
fi

status=0
for target in $targets; do
  case "$target" in
    FuzzRequest) name=request ;;
    FuzzConfig) name=config ;;
    *) echo "fuzz/run.sh: unknown target $target" >&2; exit 2 ;;
  esac
  work="$scratch/corpus/$name"
  mkdir -p "$work"
  log="$artifacts/$name.log"
  touch "$artifacts/.$name.start"
  echo "== $target for ${seconds}s (log: $log)"
  # The Swift runtime's own crash reporter would read the stack under ASan and be reported
  # instead of the crash; libFuzzer prints the stack and saves the input itself.
  set +e
  SWIFT_BACKTRACE=enable=no \
  LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$here/lsan.supp:print_suppressions=0}" \
  ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=${FUZZ_LEAKS:-1}:handle_abort=1:allocator_may_return_null=1}" \
    "$bin/$target" \
    -max_total_time="$seconds" \
    -timeout=10 \
    -rss_limit_mb=4096 \
    -max_len=8192 \
    -dict="$here/$name.dict" \
    -artifact_prefix="$artifacts/$name-" \
    -print_final_stats=1 \
    -detect_leaks="${FUZZ_LEAKS:-1}" \
    "${keep_going[@]}" \
    "$work" "$here/corpus/$name" >"$log" 2>&1
  code=$?
  set -e
  summary="$(grep -E '^#[0-9]+' "$log" | tail -1 || true)"
  echo "   $summary"
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" | sed 's/^/   /' || true
  echo "   corpus: $(find "$work" -type f | wc -l) inputs in $work, $(find "$here/corpus/$name" -type f | wc -l) committed"
  found="$(find "$artifacts" -maxdepth 1 -name "$name-*" -newer "$artifacts/.$name.start" | wc -l)"
  if [ "$code" -ne 0 ] || [ "$found" -gt 0 ]; then
    status=1
    echo "!! $target failed (exit $code, $found new artifacts in $artifacts): from $log:" >&2
    grep -E "FUZZ PROPERTY VIOLATED|Fatal error|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|SUMMARY|Test unit written|^    #[0-9]+ " "$log" | head -40 >&2 || true
  fi
done
exit "$status"
