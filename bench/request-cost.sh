#!/usr/bin/env bash
# What one proxied request costs Breakwater in the steady state, counted where it can be:
# heap allocations per request (an LD_PRELOAD counter) and CPU time per request (from /proc).
# Each figure is the difference between a run of N and one of 3N keep-alive requests, divided
# by 2N, so start-up and warm-up cancel out.
#
#   bench/request-cost.sh [N]      (default N = 5000; needs gcc, python3 and nginx, which it
#                                   installs from Debian's packages when it can)
#
# (valgrind 3.19, Debian 12's, cannot read the DWARF 5 of Swift 6.3 binaries, hence the shim.)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
swift build -c release --product breakwater >/dev/null
BIN=$(swift build -c release --show-bin-path)/breakwater
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
gcc -O2 -shared -fPIC -o "$WORK/malloc-count.so" bench/malloc-count.c

# The app: nginx answering a small 200 from one worker. (Python's http.server writes a
# response in two segments and, without TCP_NODELAY, stalls each on a delayed ACK: 40 ms a
# request, which would measure the kernel, not the proxy.)
command -v nginx >/dev/null || apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
APP_PORT=18731
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
  }
}
NGINX
nginx -c "$WORK/nginx.conf" &
cat > "$WORK/proxy.conf" <<CONF
listen = "127.0.0.1:18730"
upstream = "127.0.0.1:$APP_PORT"
[admin]
listen = "127.0.0.1:18739"
[log]
access = false
level = "warning"
CONF

# Runs Breakwater while N requests go through one keep-alive connection; prints
# "allocations cpu_ticks".
run() {
  LD_PRELOAD="$WORK/malloc-count.so" "$BIN" --config "$WORK/proxy.conf" 2>"$WORK/err" &
  local pid=$!
  python3 - "$1" "$pid" <<'PY'
import http.client, sys, time
requests, pid = int(sys.argv[1]), sys.argv[2]
def cpu():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])
for _ in range(100):
    try:
        c = http.client.HTTPConnection("127.0.0.1", 18730, timeout=30)
        c.request("GET", "/health"); r = c.getresponse(); r.read()
        if r.status == 200: break
    except OSError:
        time.sleep(0.1)
for _ in range(200):  # warm up: pools, handle caches
    c.request("GET", "/warm"); c.getresponse().read()
start = cpu()
for _ in range(requests):
    c.request("GET", "/items"); r = c.getresponse(); r.read(); assert r.status == 200
print(cpu() - start, flush=True)
PY
  kill -TERM $pid; wait $pid || true
  grep -o "malloc-count: [0-9]*" "$WORK/err" | tr -dc 0-9; echo
}

run "$N" > "$WORK/small"
small_allocs=$(tail -1 "$WORK/small"); small_cpu=$(head -1 "$WORK/small")
run $((3 * N)) > "$WORK/large"
large_allocs=$(tail -1 "$WORK/large"); large_cpu=$(head -1 "$WORK/large")
ticks=$(getconf CLK_TCK)
echo "requests: $N and $((3 * N)) through one keep-alive connection"
echo "heap allocations per request: $(( (large_allocs - small_allocs) / (2 * N) ))"
echo "CPU per request: $(( (large_cpu - small_cpu) * 1000000 / ticks / (2 * N) )) µs (the proxy process; the app and client not counted)"
