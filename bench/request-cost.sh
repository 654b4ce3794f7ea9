#!/usr/bin/env bash
# What one request costs Breakwater in the steady state, counted where it can be counted
# exactly: instructions per request (valgrind's callgrind), heap allocations per request (an
# LD_PRELOAD counter), and CPU time per request (from /proc, the noisiest of the three). Each
# figure is the difference between a run of N and one of 3N keep-alive requests, divided by 2N,
# so start-up and warm-up cancel out. Three kinds of request: one proxied to the app, one shed
# at a route's hard limit, and one refused by an open breaker.
#
#   bench/request-cost.sh [N]      (default N = 500, 4-8 minutes; needs gcc, valgrind, python3 and nginx,
#                                   which it installs from Debian's packages when it can)
#
# Instruction counts are the figure to compare builds by: they repeat to a fraction of a
# percent, where CPU time on a shared 2-core machine moves by ten. (valgrind 3.19, Debian 12's,
# cannot read the DWARF 5 of Swift 6.3 binaries, so it runs a copy stripped of debug info.)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500}
command -v valgrind >/dev/null || apt-get install -y -qq --no-install-recommends valgrind >/dev/null
command -v nginx >/dev/null || apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
# The binary as the Dockerfile ships it, the same build as bench/run.sh's.
build=(swift build -c release --product breakwater --static-swift-stdlib --scratch-path .build-static)
"${build[@]}" >/dev/null
BIN=$("${build[@]}" --show-bin-path)/breakwater
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
gcc -O2 -shared -fPIC -o "$WORK/malloc-count.so" bench/malloc-count.c
strip --strip-debug -o "$WORK/breakwater" "$BIN"

# The app: nginx answering a small 200 (and a 500 under /broken/) from one worker, and a port
# that accepts and never answers, which holds the "shed" route's only slot. (Python's
# http.server writes a response in two segments and, without TCP_NODELAY, stalls each on a
# delayed ACK: 40 ms a request, which would measure the kernel, not the proxy.)
APP_PORT=18731
HOLD_PORT=18732
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$APP_PORT;
    location / { return 200 "ok"; }
    location /broken/ { return 500 "broken"; }
    location /shed/ { proxy_pass http://127.0.0.1:$HOLD_PORT; proxy_read_timeout 3600s; }
  }
}
NGINX
nginx -c "$WORK/nginx.conf" &
python3 -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $HOLD_PORT)); s.listen(64)
time.sleep(36000)" &
cat > "$WORK/proxy.conf" <<CONF
listen = "127.0.0.1:18730"
upstream = "127.0.0.1:$APP_PORT"
[admin]
listen = "127.0.0.1:18739"
[log]
access = false
level = "warning"
[[route]]
name = "shed"
path_prefix = "/shed/"
[route.concurrency]
soft_limit = 1
hard_limit = 1
[[route]]
name = "broken"
path_prefix = "/broken/"
[route.breaker]
failure_threshold = 1
recovery_timeout = "1h"
max_recovery_timeout = "1h"
CONF

# Runs Breakwater (under `$1`: "valgrind" or "malloc") while `$3` requests for path `$2` go
# through one keep-alive connection, and prints the figure: instructions, allocations, or
# (always, on the second line) CPU ticks.
run() {
  local mode=$1 path=$2 requests=$3 pid
  if [[ $mode == valgrind ]]; then
    valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
      "$WORK/breakwater" --config "$WORK/proxy.conf" 2>"$WORK/err" &
  else
    LD_PRELOAD="$WORK/malloc-count.so" "$WORK/breakwater" --config "$WORK/proxy.conf" 2>"$WORK/err" &
  fi
  pid=$!
  local ticks
  ticks=$(python3 - "$path" "$requests" "$pid" <<'PY'
import http.client, os, re, socket, sys, time
path, requests, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def cpu():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])
def connect():
    for _ in range(600):  # valgrind starts slowly
        if not os.path.exists(f"/proc/{pid}"):
            sys.exit("Breakwater exited")
        try:
            c = http.client.HTTPConnection("127.0.0.1", 18730, timeout=60)
            c.request("GET", "/health"); r = c.getresponse(); r.read()
            if r.status == 200: return c
        except OSError:
            time.sleep(0.1)
    sys.exit("Breakwater did not start")
c = connect()
if path.startswith("/shed/"):  # the route's only slot, held for the whole run
    hold = socket.create_connection(("127.0.0.1", 18730))
    hold.sendall(b"GET /shed/hold HTTP/1.1\r\nHost: bench\r\n\r\n")
    # Held when the admin gauge says so, not when a probe is refused: a probe read before
    # the holder's request would take the slot itself and wait on the app for ever.
    taken = re.compile(rb'^breakwater_in_flight_requests\{route="shed"\} 1(\.0)?$', re.M)
    for _ in range(600):
        admin = http.client.HTTPConnection("127.0.0.1", 18739, timeout=60)
        admin.request("GET", "/metrics")
        if taken.search(admin.getresponse().read()): break
        time.sleep(0.1)
    else:
        sys.exit("the shed route never filled")
if path.startswith("/broken/"):  # one failure opens the breaker
    c.request("GET", "/broken/open"); c.getresponse().read()
expected = 200 if path == "/items" else 503
for _ in range(100):  # warm up: pools, caches
    c.request("GET", path); r = c.getresponse(); r.read(); assert r.status == expected, r.status
start = cpu()
for _ in range(requests):
    c.request("GET", path); r = c.getresponse(); r.read(); assert r.status == expected, r.status
print(cpu() - start, flush=True)
PY
) || { cat "$WORK/err" >&2; kill "$pid" $$ 2>/dev/null; exit 1; }
  kill -TERM "$pid"; wait "$pid" || true
  if [[ $mode == valgrind ]]; then
    grep -m1 "^summary:" "$WORK/callgrind.out" | tr -dc 0-9; echo
  else
    grep -o "malloc-count: [0-9]*" "$WORK/err" | tr -dc 0-9; echo
  fi
  echo "$ticks"
}

# Per request: (figure over 3N − figure over N) / 2N.
per_request() {
  local mode=$1 path=$2 small large
  small=$(run "$mode" "$path" "$N"); large=$(run "$mode" "$path" $((3 * N)))
  echo $(( ($(head -1 <<<"$large") - $(head -1 <<<"$small")) / (2 * N) )) \
       $(( ($(tail -1 <<<"$large") - $(tail -1 <<<"$small")) * 1000000 / $(getconf CLK_TCK) / (2 * N) ))
}

echo "requests: $N and $((3 * N)) through one keep-alive connection, per request:"
printf "%-34s %14s %12s %16s\n" "" "instructions" "allocations" "CPU µs (noisy)"
for path in /items /shed/x /broken/x; do
  read -r instructions _ < <(per_request valgrind "$path")
  read -r allocations cpu < <(per_request malloc "$path")
  case $path in
    /items) label="proxied to the app" ;;
    /shed/x) label="shed at a route's hard limit (503)" ;;
    /broken/x) label="refused by an open breaker (503)" ;;
  esac
  printf "%-34s %14s %12s %16s\n" "$label" "$instructions" "$allocations" "$cpu"
done
