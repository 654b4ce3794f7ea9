#!/usr/bin/env python3
"""What one request costs Breakwater in the steady state, counted where it can be counted.

Started by bench/request-cost.sh, which installs the tools and builds Breakwater; see README.md
("Benchmarks"). The same backend, configuration and refusal set-up as bench/compare.py's, with
one keep-alive connection instead of a load generator:

- instructions per request, from valgrind's callgrind (repeats to within about 2%);
- heap allocations per request, from an LD_PRELOAD counter (bench/malloc-count.c);
- CPU per request, from /proc (the noisiest of the three).

Each figure is the difference between a run of N and one of 3N requests, divided by 2N, so
start-up and warm-up cancel out. Three kinds of request: one proxied to the app, one shed at a
route's hard limit, and one refused by an open breaker; with --floor, also a request through
each mode of bench/nio-floor (compare.FLOORS): the least a proxy on NIO's HTTP/1 decoders, on
llhttp called directly, and on no HTTP at all costs.
"""

import argparse
import http.client
import os
import re
import sys
import tempfile

import compare

KINDS = [
    ("/items", 200, "proxied to the app"),
    ("/shed/x", 503, "shed at a route's hard limit (503)"),
    ("/broken/x", 503, "refused by an open breaker (503)"),
]


def run(args, counter, path, expected, requests, floor=None):
    """Breakwater (or, with `floor`, one of compare.FLOORS' modes of bench/nio-floor, by name)
    under `counter` ("instructions" or "allocations") while `requests` requests for `path` go
    through one keep-alive connection: the counter's total, and CPU seconds."""
    callgrind_out = os.path.join(compare.WORK, "callgrind.out")
    if floor:
        mode = next(mode for name, _, mode, _ in compare.FLOORS if name == floor)
        argv = compare.floor_command(args.floor, compare.BREAKWATER_PORT, mode)
    else:
        argv = [args.breakwater, "--config", compare.breakwater_config()]
    env = None
    if counter == "instructions":
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind_out}"] + argv
    else:
        env = dict(os.environ, LD_PRELOAD=args.malloc_count)
    breakwater = compare.Server("breakwater", compare.BREAKWATER_PORT, argv, env=env, startup_seconds=120)
    try:
        if not floor:
            compare.prepare_refusals(breakwater)
        connection = http.client.HTTPConnection("127.0.0.1", breakwater.port, timeout=60)

        def ask(count):
            for _ in range(count):
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                if response.status != expected:
                    sys.exit(f"{path}: {response.status}, expected {expected}")

        ask(100)  # warm up: pools, caches
        before = breakwater.cpu_seconds()
        ask(requests)
        cpu = breakwater.cpu_seconds() - before
    finally:
        if not floor:
            compare.prepare_refusals.holder.close()  # so the drain at SIGTERM has nothing to wait for
        breakwater.stop(timeout=120)
    if counter == "instructions":
        total = re.search(r"^summary:\s+(\d+)", open(callgrind_out).read(), re.M)
    else:
        total = re.search(r"malloc-count: (\d+)", open(breakwater.stderr_path()).read())
    if total is None:
        sys.exit(f"no {counter} count; see {breakwater.stderr_path()}")
    return int(total.group(1)), cpu


def per_request(args, counter, path, expected, floor=None):
    """(figure over 3N − figure over N) / 2N, for the counter and for CPU seconds."""
    small = run(args, counter, path, expected, args.requests, floor)
    large = run(args, counter, path, expected, 3 * args.requests, floor)
    return [(after - before) / (2 * args.requests) for before, after in zip(small, large)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--breakwater", required=True, help="the release binary, without debug info")
    parser.add_argument("--malloc-count", required=True, help="the LD_PRELOAD allocation counter")
    parser.add_argument("--requests", type=int, default=500, help="N")
    parser.add_argument("--floor", help="also bench/nio-floor, this binary (without debug info)")
    args = parser.parse_args()

    blackhole = compare.open_blackhole()  # open for the whole run
    backend = compare.start_backend(None)
    try:
        print(f"requests: {args.requests} and {3 * args.requests} through one keep-alive connection, per request:")
        print(f"{'':34} {'instructions':>14} {'allocations':>12} {'CPU µs (noisy)':>16}")
        rows = [(path, expected, label, None) for path, expected, label in KINDS]
        if args.floor:
            rows += [("/items", 200, f"{name}, proxied", name) for name, *_ in compare.FLOORS]
        for path, expected, label, floor in rows:
            instructions, _ = per_request(args, "instructions", path, expected, floor)
            allocations, cpu = per_request(args, "allocations", path, expected, floor)  # CPU without valgrind
            print(f"{label:34} {instructions:>14.0f} {allocations:>12.0f} {cpu * 1e6:>16.0f}", flush=True)
    finally:
        backend.stop()
        blackhole.close()


if __name__ == "__main__":
    compare.WORK = tempfile.mkdtemp(prefix="breakwater-request-cost-")
    main()
