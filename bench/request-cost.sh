#!/usr/bin/env bash
# What one proxied request costs Breakwater, counted rather than timed, so the figures repeat
# on a noisy machine: heap allocations per request (valgrind memcheck) and instructions per
# request (valgrind callgrind), overall and in the metrics recording. Steady state: the
# difference between a run of N and one of 3N keep-alive requests, divided by 2N.
#
#   bench/request-cost.sh [N]      (default N = 2000; needs valgrind and python3)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)"; exit 1; }
swift build -c release --product breakwater >/dev/null
BIN=$(swift build -c release --show-bin-path)/breakwater
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

APP_PORT=18731
python3 Tests/Fixtures/app.py $APP_PORT &
sleep 0.5
cat > "$WORK/proxy.conf" <<CONF
listen = "127.0.0.1:18730"
upstream = "127.0.0.1:$APP_PORT"
[admin]
listen = "127.0.0.1:18739"
[log]
access = false
level = "warning"
CONF

# Sends $1 GET requests over one keep-alive connection.
drive() {
  python3 - "$1" <<'PY'
import http.client, sys, time
for _ in range(100):
    try:
        c = http.client.HTTPConnection("127.0.0.1", 18730, timeout=30); c.request("GET", "/health"); c.getresponse().read(); break
    except OSError:
        time.sleep(0.2)
for _ in range(int(sys.argv[1])):
    c.request("GET", "/items"); r = c.getresponse(); r.read(); assert r.status == 200
PY
}

# Runs Breakwater under a valgrind tool while $2 requests go through; prints the tool's output file.
run() {
  local tool=$1 requests=$2 out="$WORK/$1-$2"
  valgrind --tool="$tool" ${3:-} --log-file="$out.log" "$BIN" --config "$WORK/proxy.conf" &
  local pid=$!
  drive "$requests"
  kill -TERM $pid; wait $pid || true
  echo "$out"
}

allocs() { grep -o 'total heap usage: [0-9,]* allocs' "$1.log" | tr -dc 0-9; }
small=$(run memcheck "$N"); large=$(run memcheck $((3 * N)))
echo "heap allocations per request: $(( ($(allocs "$large") - $(allocs "$small")) / (2 * N) ))"

small=$(run callgrind "$N" "--callgrind-out-file=$WORK/cg-small"); large=$(run callgrind $((3 * N)) "--callgrind-out-file=$WORK/cg-large")
total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'; }
inclusive() { callgrind_annotate --inclusive=yes "$1" 2>/dev/null | grep -m1 "$2" | awk '{gsub(",", "", $1); print $1}'; }
echo "instructions per request: $(( ($(total "$WORK/cg-large") - $(total "$WORK/cg-small")) / (2 * N) ))"
for symbol in recordCompletion requestCounter; do
  a=$(inclusive "$WORK/cg-small" "$symbol"); b=$(inclusive "$WORK/cg-large" "$symbol")
  [ -n "$a" ] && [ -n "$b" ] && echo "  of which in ${symbol}: $(( (b - a) / (2 * N) ))"
done
