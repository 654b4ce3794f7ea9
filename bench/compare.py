#!/usr/bin/env python3
"""Breakwater against nginx and HAProxy, one worker/thread each, on this machine, in one run.

Started by bench/run.sh, which installs the tools and builds Breakwater; see README.md
("Benchmarks"). Every proxy forwards to the same backend (nginx answering a small 200 from one
worker) and is measured the same way, in alternation, round after round; the medians over the
rounds are printed, with each figure's ratio to nginx's and HAProxy's.

- throughput: wrk, 64 keep-alive connections, one thread, small responses; and meanwhile the
  server's user and system CPU per request;
- CPU per request at a fixed 10,000 req/s (h2load --rps), from the proxy's /proc/PID/stat;
- latency at that rate: h2load's mean and max "time for request";
- resident memory (VmRSS) idle, and with 1,000 keep-alive connections open;
- what a fast refusal costs Breakwater: a request shed at a route's hard limit and one refused
  by an open breaker, at the same fixed rate.

Results are figures, not pass/fail; the targets of issue #7 are printed beside them.
"""

import argparse
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BACKEND_PORT, BREAKWATER_PORT, NGINX_PORT, HAPROXY_PORT = 18800, 18801, 18802, 18803
# bench/nio-floor's three measuring sticks: (name, port, its argument, what it has).
FLOORS = [
    ("nio-floor", 18804, None, "NIO's HTTP/1 decoders and channels, no proxy logic"),
    ("nio-llhttp", 18805, "--llhttp", "NIO's channels and llhttp called directly"),
    ("nio-bytes", 18806, "--bytes", "NIO's channels relaying bytes, no HTTP"),
]
ADMIN_PORT, BLACKHOLE_PORT = 18811, 18899
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the contestants ---------------------------------------------------------------------------

class Server:
    """A process (and its children) under test: where it listens and what it costs."""

    def __init__(self, name, port, argv, cpu=None, env=None, startup_seconds=30):
        self.name, self.port = name, port
        # Something already answering there (a server left over from an interrupted run) would
        # be measured in this one's place, unpinned and uncounted.
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                sys.exit(f"{name}: port {port} is already in use; stop what listens there (`ss -ltnp`)")
        prefix = ["taskset", "-c", cpu] if cpu is not None else []
        self.process = subprocess.Popen(prefix + argv, stdout=subprocess.DEVNULL,
                                        stderr=open(self.stderr_path(), "w"),
                                        start_new_session=True, env=env)
        wait_until_answering(port, name, timeout=startup_seconds)

    def stderr_path(self):
        return os.path.join(WORK, self.name + ".err")

    def pids(self):
        """The process and its descendants (nginx's workers)."""
        pids, frontier = [self.process.pid], [self.process.pid]
        while frontier:
            parent = frontier.pop()
            for child in children_of(parent):
                pids.append(child)
                frontier.append(child)
        return pids

    def cpu_seconds(self):
        return sum(self.cpu_split())

    def cpu_split(self):
        """User and system CPU seconds so far, all threads of all its processes."""
        user = system = 0
        for pid in self.pids():
            try:
                fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                user, system = user + int(fields[11]), system + int(fields[12])  # utime, stime
            except FileNotFoundError:
                pass
        return user / CLOCK_TICKS, system / CLOCK_TICKS

    def rss_mb(self):
        total = 0
        for pid in self.pids():
            try:
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except FileNotFoundError:
                pass
        return total / 1024

    def stop(self, timeout=10):
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


def children_of(pid):
    try:
        return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except FileNotFoundError:
        return []


def wait_until_answering(port, name, path="/", timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http_get(port, path)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"{name} did not answer on port {port}; see {WORK}/{name}.err")


def http_get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


def write(name, text):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def start_backend(cpu):
    conf = write("backend.conf", f"""
worker_processes 1;
daemon off;
pid {WORK}/backend.pid;
error_log {WORK}/backend-error.log;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{BACKEND_PORT} backlog=4096;
    location / {{ return 200 "ok"; }}
    location /broken/ {{ return 500 "broken"; }}
    # Holds a request for as long as the bench runs: its upstream accepts and never answers.
    location /shed/ {{ proxy_pass http://127.0.0.1:{BLACKHOLE_PORT}; proxy_read_timeout 3600s; }}
  }}
}}
""")
    return Server("backend", BACKEND_PORT, ["nginx", "-p", WORK, "-c", conf], cpu)


def open_blackhole():
    """The port behind the backend's /shed/: it accepts and never answers."""
    blackhole = socket.socket()
    blackhole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blackhole.bind(("127.0.0.1", BLACKHOLE_PORT))
    blackhole.listen(4096)
    return blackhole


def breakwater_config():
    """Breakwater in front of the backend, with the routes `prepare_refusals` fills and breaks."""
    return write("proxy.conf", f"""
listen = "127.0.0.1:{BREAKWATER_PORT}"
upstream = "127.0.0.1:{BACKEND_PORT}"

[server]
threads = 1
max_connections = 100000

[concurrency]
soft_limit = 1000
hard_limit = 2000

[admin]
listen = "127.0.0.1:{ADMIN_PORT}"

[log]
access = false   # nginx and HAProxy run without access logs too
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
""")


def start_breakwater(binary, cpu):
    return Server("breakwater", BREAKWATER_PORT, [binary, "--config", breakwater_config()], cpu)


def floor_command(binary, port, mode=None):
    """`bench/nio-floor` listening on `port` in front of the backend; `mode` is one of FLOORS'."""
    return [binary, str(port), str(BACKEND_PORT)] + ([mode] if mode else [])


def start_floors(binary, cpu):
    """`bench/nio-floor` in each of its modes: what a proxy built on NIO costs before any work of
    its own, with NIO's HTTP/1 decoders, with llhttp called directly, and with no HTTP at all."""
    return [Server(name, port, floor_command(binary, port, mode), cpu) for name, port, mode, _ in FLOORS]


def start_nginx(cpu):
    conf = write("nginx.conf", f"""
worker_processes 1;
daemon off;
pid {WORK}/nginx.pid;
error_log {WORK}/nginx-error.log;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  upstream app {{
    server 127.0.0.1:{BACKEND_PORT};
    keepalive 64;
    keepalive_requests 10000000;
  }}
  server {{
    listen 127.0.0.1:{NGINX_PORT} backlog=4096;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
""")
    return Server("nginx", NGINX_PORT, ["nginx", "-p", WORK, "-c", conf], cpu)


def start_haproxy(cpu):
    conf = write("haproxy.cfg", f"""
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  option http-keep-alive
  timeout connect 1s
  timeout client 300s
  timeout server 30s
  timeout http-keep-alive 300s
frontend proxy
  bind 127.0.0.1:{HAPROXY_PORT}
  default_backend app
backend app
  server app 127.0.0.1:{BACKEND_PORT}
""")
    return Server("haproxy", HAPROXY_PORT, ["haproxy", "-db", "-f", conf], cpu)


# --- the measurements --------------------------------------------------------------------------

def run(argv):
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def throughput(server, seconds, cpu):
    """Requests per second answered 2xx by wrk's 64 keep-alive connections; and meanwhile the
    server's user and system CPU per request, µs: where a saturated proxy's time goes (the
    kernel's share is the same socket work for every proxy; the user share is its own)."""
    before = server.cpu_split()
    out = run(["taskset", "-c", cpu, "wrk", "-t1", "-c64", f"-d{seconds}s",
               f"http://127.0.0.1:{server.port}/"])
    user, system = (after - start for after, start in zip(server.cpu_split(), before))
    if "Non-2xx" in out or "Socket errors" in out:
        sys.exit(f"{server.name}: wrk saw errors:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "user_us": user / requests * 1e6,
        "sys_us": system / requests * 1e6,
    }


def at_fixed_rate(server, seconds, cpu, path="/", rate=10_000, expect="2xx"):
    """CPU µs per request, and mean and max latency in ms, at `rate` requests per second."""
    clients = 20
    argv = ["taskset", "-c", cpu, "h2load", "--h1", "-t1", f"-c{clients}", f"--rps={rate // clients}",
            f"-D{seconds}", "--warm-up-time=1", f"http://127.0.0.1:{server.port}{path}"]
    before = server.cpu_seconds()
    out = run(argv)
    spent = server.cpu_seconds() - before
    done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", out).group(1))
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out).groups()
    wanted = {"2xx": 0, "5xx": 3}[expect]
    if int(codes[wanted]) != done or done == 0:
        sys.exit(f"{server.name} {path}: expected every answer {expect}:\n{out}")
    mean, maximum = latency(out)
    # The warm-up second's requests are not in `done` but their CPU is in `spent`.
    total = done * (seconds + 1) / seconds
    return {"cpu_us": spent / total * 1e6, "mean_ms": mean, "max_ms": maximum}


def latency(out):
    line = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    return to_ms(line.group(3)), to_ms(line.group(2))


def to_ms(text):
    value, unit = re.match(r"([\d.]+)(\D+)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def rss_with_connections(server, count=1000):
    """VmRSS with `count` keep-alive connections open, each having made one request."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            sockets.append(s)
        for s in sockets:
            data = b""
            while b"\r\n\r\nok" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    sys.exit(f"{server.name} closed a keep-alive connection")
                data += chunk
        time.sleep(1)
        return server.rss_mb()
    finally:
        for s in sockets:
            s.close()
        time.sleep(1)


# --- the run -----------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--breakwater", required=True, help="the release binary")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="length of each load run")
    parser.add_argument("--floor", help="also measure this bench/nio-floor binary, in each of its modes")
    args = parser.parse_args()

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1,000 connections and then some
    # Proxies on one core, load and backend on the other, so the proxies compete for nothing.
    proxy_cpu, load_cpu = ("1", "0") if os.cpu_count() >= 2 else ("0", "0")

    blackhole = open_blackhole()  # open for the whole run
    backend = start_backend(load_cpu)
    servers = []
    try:
        servers.append(start_breakwater(args.breakwater, proxy_cpu))
        servers.append(start_nginx(proxy_cpu))
        servers.append(start_haproxy(proxy_cpu))
        if args.floor:
            servers += start_floors(args.floor, proxy_cpu)
        for server in servers:
            for _ in range(10):
                http_get(server.port, "/")
        idle = {s.name: s.rss_mb() for s in servers}
        breakwater = servers[0]
        prepare_refusals(breakwater)

        samples = {}  # (name, figure) -> [values]
        def record(name, figure, value):
            samples.setdefault((name, figure), []).append(value)

        for round in range(args.rounds):
            print(f"round {round + 1} of {args.rounds} ...", file=sys.stderr, flush=True)
            turn = round % len(servers)
            order = [backend] + servers[turn:] + servers[:turn]
            for server in order:
                for figure, value in throughput(server, args.seconds, load_cpu).items():
                    record(server.name, figure, value)
                fixed = at_fixed_rate(server, args.seconds, load_cpu)
                for figure, value in fixed.items():
                    record(server.name, figure, value)
            for path, figure in [("/shed/x", "shed_cpu_us"), ("/broken/x", "breaker_cpu_us")]:
                refusal = at_fixed_rate(breakwater, args.seconds, load_cpu, path=path, expect="5xx")
                record("breakwater", figure, refusal["cpu_us"])
            for server in servers:
                record(server.name, "rss_1000_mb", rss_with_connections(server))
        report(samples, idle, args)
    finally:
        for server in servers + [backend]:
            server.stop()


def prepare_refusals(breakwater):
    """Occupies the "shed" route's only slot for the whole run and opens the "broken" breaker."""
    holder = socket.create_connection(("127.0.0.1", breakwater.port))
    holder.sendall(b"GET /shed/hold HTTP/1.1\r\nHost: bench\r\n\r\n")
    prepare_refusals.holder = holder  # kept open until the process exits
    deadline = time.monotonic() + 10
    while http_get(breakwater.port, "/shed/probe")[0] != 503:
        if time.monotonic() > deadline:
            sys.exit("the shed route never filled")
        time.sleep(0.05)
    http_get(breakwater.port, "/broken/open")
    status, data = http_get(breakwater.port, "/broken/probe")
    if status != 503 or b"breaker_open" not in data:
        sys.exit(f"the breaker did not open:\n{data.decode(errors='replace')}")


def report(samples, idle, args):
    median = {key: statistics.median(values) for key, values in samples.items()}
    names = ["breakwater", "nginx", "haproxy"] + ([name for name, *_ in FLOORS] if args.floor else [])
    rows = [
        ("throughput, req/s (wrk -c64)", "rps", "higher"),
        ("  its user CPU per request, µs", "user_us", "lower"),
        ("  its system CPU per request, µs", "sys_us", "lower"),
        ("CPU per request at 10k req/s, µs", "cpu_us", "lower"),
        ("latency at 10k req/s, mean ms", "mean_ms", "lower"),
        ("latency at 10k req/s, max ms", "max_ms", "lower"),
        ("RSS with 1,000 keep-alive conns, MB", "rss_1000_mb", "lower"),
    ]
    print(f"\nMedians of {args.rounds} rounds of {args.seconds} s each; one worker/thread per proxy,"
          f" pinned to one core; load and backend on the other.\n")
    header = f"{'':40}" + "".join(f"{n:>12}" for n in names + ["backend"]) + f"{'÷ nginx':>10}{'÷ haproxy':>11}"
    print(header)
    for label, figure, _ in rows:
        values = [median.get((n, figure)) for n in names + ["backend"]]
        cells = "".join(f"{v:>12.1f}" if v is not None else f"{'':>12}" for v in values)
        ratios = f"{values[0] / values[1]:>10.2f}{values[0] / values[2]:>11.2f}"
        print(f"{label:40}{cells}{ratios}")
    cells = "".join(f"{idle[n]:>12.1f}" for n in names) + f"{'':>12}"
    print(f"{'RSS idle, MB':40}{cells}{idle['breakwater'] / idle['nginx']:>10.2f}"
          f"{idle['breakwater'] / idle['haproxy']:>11.2f}")
    if args.floor:
        print("\nbench/nio-floor, no proxy logic, in its three modes:")
        for name, _, _, has in FLOORS:
            print(f"  {name:11} ({has}): throughput {median[(name, 'rps')] / median[('nginx', 'rps')]:.2f}"
                  f" × nginx's, user CPU {median[(name, 'user_us')]:.1f} µs a request at saturation,"
                  f" CPU at 10k req/s {median[(name, 'cpu_us')] / median[('haproxy', 'cpu_us')]:.2f} × HAProxy's")
        floor_rps, floor_cpu = median[("nio-floor", "rps")], median[("nio-floor", "cpu_us")]
        print(f"  Breakwater has {median[('breakwater', 'rps')] / floor_rps:.2f} × nio-floor's throughput and"
              f" {median[('breakwater', 'cpu_us')] / floor_cpu:.2f} × its CPU per request")
    shed, breaker = median[("breakwater", "shed_cpu_us")], median[("breakwater", "breaker_cpu_us")]
    print(f"\nBreakwater's fast refusals at 10k req/s: shed at the hard limit {shed:.1f} µs CPU,"
          f" breaker open {breaker:.1f} µs CPU")

    rps = median[("breakwater", "rps")] / median[("nginx", "rps")]
    cpu = median[("breakwater", "cpu_us")] / median[("haproxy", "cpu_us")]
    rss = median[("breakwater", "rss_1000_mb")]
    print("\nIssue #7's targets:")
    for met, text in [
        (rps >= 0.8, f"throughput ≥ 0.8 × nginx's: {rps:.2f}"),
        (cpu <= 1.5, f"CPU per request ≤ 1.5 × HAProxy's: {cpu:.2f}"),
        (idle["breakwater"] <= 20, f"idle RSS ≤ 20 MB: {idle['breakwater']:.1f}"),
        (rss <= 64, f"RSS with 1,000 connections ≤ 64 MB: {rss:.1f}"),
        (max(shed, breaker) < 20, f"a refusal under 20 µs CPU: {max(shed, breaker):.1f}"),
    ]:
        print(f"  [{'met' if met else 'MISSED'}] {text}")


if __name__ == "__main__":
    WORK = tempfile.mkdtemp(prefix="breakwater-bench-")
    main()
