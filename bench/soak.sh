#!/usr/bin/env bash
# Soak test (issue #8): Breakwater under mixed traffic for minutes on end, watching its memory
# and its file descriptors. Pass or fail; CI does not run it.
#
#   bench/soak.sh [--minutes N] [--asan] [--rss-growth-mb M] [--fd-slack K]
#                 [--settle-seconds S] [--sample-seconds S] [--rate R] [--conn-rate C]
#                 [--threads T] [--verbose]
#
#   bench/soak.sh                    # 10 minutes against the release build
#   bench/soak.sh --minutes 1        # a quick run
#   bench/soak.sh --asan --minutes 2 # against an AddressSanitizer build (LeakSanitizer at exit)
#
# Options (all passed on to bench/soak.py, which runs the soak):
#   --minutes N          how long the load lasts (default 10; fractions allowed)
#   --asan               build with -sanitize=address into .build-asan (a debug build) and soak
#                        that; the sanitizer's report on stderr at exit fails the run. RSS is not
#                        judged then (ASan's quarantine grows it); LeakSanitizer judges leaks.
#   --rss-growth-mb M    fail when VmRSS grows more than M MB from the end of the warm-up (the
#                        first minute, or half the run if shorter) to the end (default 16)
#   --fd-slack K         fail when the open fds, after the settle period, are more than K above
#                        the idle baseline taken before the load (default 10)
#   --settle-seconds S   wait after the load before the final sample (default 15; longer than the
#                        5 s client and upstream idle timeouts the soak configures)
#   --sample-seconds S   how often VmRSS and /proc/PID/fd are sampled under load (default 5)
#   --rate R             keep-alive GETs per second from h2load (default 400; 100 with --asan)
#   --conn-rate C        new connections per second, one request each (default 100; 25 with --asan)
#   --threads T          server.threads (default 1)
#   --verbose            print every sample as it is taken
#
# What it does: installs what is missing from Debian's packages (nginx-light, wrk,
# nghttp2-client for h2load), builds Breakwater, starts nginx (one worker) as the app with a
# small asyncio app behind it for the slow, flaky, echoing, streaming and upgrade paths, and
# starts Breakwater in front with routes for shedding (hard_limit 4), breakers (recovery 1 s),
# a 500 ms timeout and a 5 s body timeout. Then, concurrently: keep-alive GETs at a fixed rate,
# short connections (one request each, ~100 a second),
# POSTs of 0 B to ~1 MB (and over the 2 MB limit), slow and stalled readers of a 4 MB body,
# clients leaving mid-head, mid-body, while queued or waiting and mid-response (FIN and RST),
# half-closes, pipelined bursts, malformed requests (bad Content-Length, no Host, CL+TE, ...,
# 431, 413, slowloris 408), shed bursts, two breakers opening and closing, 504s, WebSocket-style
# upgrades with echoed bytes, admin scrapes and a SIGHUP reload every 20 s. See bench/soak.py.
#
# At the end: a settle period, SIGTERM (Breakwater must drain and exit 0), and a summary: RSS
# and fds at the start, end of warm-up, max, end of load and end; requests by status, and
# outcomes per worker. Exits 1 when the proxy died, did not exit 0 on SIGTERM, kept more fds
# than idle + K, grew RSS more than M MB after warm-up, or (--asan) the sanitizer reported.
# Samples (samples.csv) and every log stay in the printed work directory.
#
# Everything here — builds, the backend, the load and the proxy — runs under `nice -n 19`, so a
# soak does not disturb measurements made on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."

asan=0
args=()
rate_given=0
conn_rate_given=0
for arg in "$@"; do
  case "$arg" in
    --asan) asan=1 ;;
    --rate|--rate=*) rate_given=1; args+=("$arg") ;;
    --conn-rate|--conn-rate=*) conn_rate_given=1; args+=("$arg") ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$arg") ;;
  esac
done

bench/install-missing.sh nginx:nginx-light h2load:nghttp2-client wrk:wrk python3:python3

if ((asan)); then
  echo "building breakwater with AddressSanitizer (.build-asan, debug) ..." >&2
  # (gold warns once per ASan helper symbol that it cannot export: noise, filtered out)
  nice -n 19 swift build -c debug -Xswiftc -sanitize=address --product breakwater \
    --scratch-path .build-asan 2>&1 | { grep -v 'Cannot export local symbol' || true; } >&2
  bin="$(swift build -c debug --scratch-path .build-asan --show-bin-path)/breakwater"
  args+=(--asan)
  ((rate_given)) || args+=(--rate 100)   # a debug build with ASan is some ten times slower
  ((conn_rate_given)) || args+=(--conn-rate 25)
  # The toolchain's symbolizer, so the report names functions and lines.
  if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ]; then
    symbolizer="$(dirname "$(readlink -f "$(command -v swift)")")/llvm-symbolizer"
    [ -x "$symbolizer" ] && export ASAN_SYMBOLIZER_PATH="$symbolizer"
  fi
else
  echo "building breakwater (release, as the Dockerfile ships it) ..." >&2
  bin=$(nice -n 19 bench/release-build.sh)
fi

exec nice -n 19 python3 bench/soak.py --breakwater "$bin" "${args[@]}"
