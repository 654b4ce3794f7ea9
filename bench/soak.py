#!/usr/bin/env python3
"""Breakwater under mixed traffic for minutes on end: does it keep its memory and its fds?

Started by bench/soak.sh, which installs the tools and builds the binary (see its header for
usage). Python 3.11 standard library only.

What runs, all at once, each worker on its own for the whole duration:

- keepalive-get: h2load (or wrk) keep-alive GETs of a small 200, at a fixed moderate rate;
- short-conns: one GET per connection (`Connection: close`), ~100 new connections a second, so
  anything kept per connection adds up (~30 MB over 10 minutes at 500 bytes a connection);
- posts: POSTs of 0 B to ~1 MB (Content-Length and chunked), to nginx and to an echoing app,
  plus a few over server.max_body_bytes (413);
- slow-readers: 4 MB downloads read at ~1.5 MB/s through a small receive buffer, and stalled
  readers that stop reading after 64 KB (cut by the route's body_timeout);
- disconnects: clients that leave mid-head, mid-body, while waiting for the app, while queued,
  mid-response (FIN or RST), and clients that half-close after their request;
- pipelined: bursts of 20 requests in one write, GET/HEAD/POST mixed, the last one `close`;
- malformed: bad and duplicate Content-Length, no Host, CL+TE, bad chunk size, bare LF, a TLS
  hello, a too-large head (431), a too-large declared body (413), and a slowloris head (408);
- shed: bursts of 12 at a route with hard_limit 4 whose app takes 300 ms (503 hard_limit,
  503 queue_timeout, some clients leaving while queued);
- breaker: a route whose app always answers 500 (the breaker opens, half-opens, reopens), and
  one whose app fails and recovers every few seconds (the breaker opens and closes);
- slow-backend: a route with timeout 500 ms whose app takes 2 s (504 upstream_timeout);
- websocket: an Upgrade to a byte-echoing app through nginx, a few round trips, then close;
- admin: /metrics and /health/circuit-breakers every few seconds, and SIGHUP (reload) every 20 s.

Meanwhile VmRSS and the count of /proc/PID/fd are sampled. After the load, a settle period
(longer than the client and upstream idle timeouts), then SIGTERM: Breakwater must drain and
exit 0. Fails (exit 1) when the proxy died, the fds did not come back near the idle baseline,
RSS grew more than the limit between the end of the warm-up (the first minute, or half the run
when shorter) and the end, or — with --asan — the sanitizer reported anything.
"""

import argparse
import asyncio
import collections
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BACKEND_PORT, PROXY_PORT, ADMIN_PORT, APP_PORT = 18950, 18951, 18952, 18953
HOST = "127.0.0.1"
BIG_BYTES = 4 * 1024 * 1024
MAX_BODY = 2 * 1024 * 1024          # server.max_body_bytes
IDLE_TIMEOUT_S = 5                  # server.idle_timeout and upstream_pool.idle_timeout
FLAP_S = 3                          # the flaky app fails for 3 s, then succeeds for 3 s

STATS = collections.defaultdict(collections.Counter)   # worker -> outcome -> count
NOTES = collections.defaultdict(collections.Counter)   # worker -> unexpected outcome -> count


def rec(worker, outcome):
    STATS[worker][outcome] += 1


# --- the app: a small asyncio HTTP/1.1 server behind nginx ---------------------------------------

async def app_connection(reader, writer):
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            received = await read_body(reader, headers, request=True)
            path, _, query = target.partition("?")
            params = dict(p.partition("=")[::2] for p in query.split("&") if p)
            keep_alive = headers.get("connection", "").lower() != "close"
            status, body = 200, b"ok"
            if path.startswith("/ws/"):
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\n\r\n")
                await writer.drain()
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
                return
            if path.startswith("/slow/"):
                await asyncio.sleep(float(params.get("s", "2")))
                body = b"slow"
            elif path.startswith("/shed/"):
                await asyncio.sleep(0.3)
                body = b"shed"
            elif path.startswith("/flaky/"):
                if int(time.time() / FLAP_S) % 2 == 0:
                    status, body = 500, b"flaky"
            elif path.startswith("/echo/"):
                body = str(received).encode()
            elif path.startswith("/drip/"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                for i in range(10):
                    event = f"data: {i}\n\n".encode()
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                    await writer.drain()
                    await asyncio.sleep(0.05)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                if not keep_alive:
                    return
                continue
            else:
                status, body = 404, b"no such path"
            reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}[status]
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
                         f"Content-Type: text/plain\r\n\r\n".encode() + body)
            await writer.drain()
            if not keep_alive:
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()


async def serve_app(port):
    server = await asyncio.start_server(app_connection, HOST, port, backlog=1024)
    async with server:
        await server.serve_forever()


# --- HTTP/1.1 on raw streams -------------------------------------------------------------------

async def read_body(reader, headers, request=False, method="GET", status=200, sink=None):
    """Reads a message body by its framing; returns its length. `sink(n)` is awaited per piece."""
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return 0
    if "chunked" in headers.get("transfer-encoding", "").lower():
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return total
            remaining = size
            while remaining:
                piece = await reader.read(min(remaining, 65536))
                if not piece:
                    raise asyncio.IncompleteReadError(b"", remaining)
                remaining -= len(piece)
                if sink:
                    await sink(len(piece))
            await reader.readexactly(2)
            total += size
    if "content-length" in headers:
        remaining = total = int(headers["content-length"])
        while remaining:
            piece = await reader.read(min(remaining, 65536))
            if not piece:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(piece)
            if sink:
                await sink(len(piece))
        return total
    if request:
        return 0
    total = 0
    while piece := await reader.read(65536):   # until the connection closes
        total += len(piece)
        if sink:
            await sink(len(piece))
    return total


async def read_response(reader, method="GET", sink=None):
    """(status, headers, body length) of the next response; skips 100 Continue."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if status == 100:
            continue
        length = await read_body(reader, headers, method=method, status=status, sink=sink)
        return status, headers, length


async def connect(port=PROXY_PORT, rcvbuf=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (HOST, port)), 5)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=256 * 1024)


def request_bytes(method, path, body=b"", chunked=False, extra=""):
    head = f"{method} {path} HTTP/1.1\r\nHost: soak\r\n{extra}"
    if chunked:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        out = head.encode()
        for i in range(0, len(body), 100_000):
            piece = body[i:i + 100_000]
            out += b"%x\r\n%s\r\n" % (len(piece), piece)
        return out + b"0\r\n\r\n"
    if body or method in ("POST", "PUT"):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def reset_and_close(writer):
    """Closes with an RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    writer.transport.abort()


def classify(error):
    if isinstance(error, asyncio.IncompleteReadError):
        return "eof"
    if isinstance(error, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    return type(error).__name__


async def until(deadline, worker, body, pause=0.0, label=None):
    """Runs `body()` again and again until the deadline, counting its failures by kind."""
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(body(), 60)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 — every failure is an outcome to count
            rec(worker, f"{label}: {classify(error)}" if label else classify(error))
        if pause:
            await asyncio.sleep(pause)


async def close(writer):
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 2)
    except Exception:  # noqa: BLE001
        pass


# --- the workers -------------------------------------------------------------------------------

async def short_connections(deadline, rate):
    """One request per connection (`Connection: close`), `rate` connections a second: churn."""
    async def one():
        reader, writer = await connect()
        try:
            writer.write(request_bytes("GET", "/short", extra="Connection: close\r\n"))
            await writer.drain()
            status, _, _ = await read_response(reader)
            rec("short-conns", status)
        finally:
            await close(writer)

    await until(deadline, "short-conns", one, pause=1 / rate)


async def posts(deadline):
    sizes = [0, 100, 4096, 65_536, 65_537, 300_000, 1_000_000, 1_048_576]
    payload = os.urandom(MAX_BODY + 1_000_000)

    async def session():
        reader, writer = await connect()
        try:
            for _ in range(random.randint(1, 8)):
                if time.monotonic() > deadline:
                    break
                if random.random() < 0.04:     # over server.max_body_bytes: 413, connection closed
                    size, expect_close = MAX_BODY + 1_000_000, True
                else:
                    size, expect_close = random.choice(sizes), False
                body = payload[:size]
                chunked = random.random() < 0.3
                path = random.choice(["/upload", "/echo/x"])
                writer.write(request_bytes("POST", path, body, chunked=chunked))
                try:
                    await writer.drain()
                except ConnectionError:
                    if expect_close:
                        rec("posts", "reset sending a body over the limit")   # refused while we sent
                        return
                    raise
                status, headers, _ = await read_response(reader)
                rec("posts", status)
                if expect_close or headers.get("connection", "").lower() == "close":
                    return   # an early answer (nginx answers /upload before the body) closes
        finally:
            await close(writer)

    async def checked():
        # One echo round trip with the body counted by the app: the proxy passes every byte.
        reader, writer = await connect()
        try:
            size = random.choice(sizes)
            writer.write(request_bytes("POST", "/echo/count", payload[:size],
                                       chunked=random.random() < 0.5))
            await writer.drain()
            status = body_length = None
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            body_length = (await reader.readexactly(length)).decode()
            if status == 200 and body_length != str(size):
                rec("posts", "echo-length-mismatch")
            else:
                rec("posts", status)
        finally:
            await close(writer)

    async def both():
        await session()
        await checked()

    await until(deadline, "posts", both, pause=0.05)


async def slow_readers(deadline, stall_seconds):
    async def slow():
        reader, writer = await connect(rcvbuf=16384)
        try:
            writer.write(request_bytes("GET", "/big", extra="Connection: close\r\n"))
            await writer.drain()

            async def throttle(n):
                await asyncio.sleep(n / 1_500_000)
            status, _, length = await read_response(reader, sink=throttle)
            rec("slow-readers", status if length == BIG_BYTES else f"{status} short body")
        finally:
            await close(writer)

    async def stalled():
        reader, writer = await connect(rcvbuf=16384)
        try:
            writer.write(request_bytes("GET", "/big?stall"))
            await writer.drain()
            await reader.readexactly(65536)
            await asyncio.sleep(stall_seconds)    # longer than the route's body_timeout
            got = 0
            try:
                while piece := await asyncio.wait_for(reader.read(1 << 20), 5):
                    got += len(piece)
            except (ConnectionError, asyncio.TimeoutError):
                pass
            rec("slow-readers", "stalled-complete" if got + 65536 >= BIG_BYTES else "stalled-cut")
        finally:
            await close(writer)

    await asyncio.gather(until(deadline, "slow-readers", slow, pause=0.2, label="slow"),
                         until(deadline, "slow-readers", slow, pause=0.5, label="slow"),
                         until(deadline, "slow-readers", stalled, pause=1.0, label="stalled"))


async def disconnects(deadline):
    async def mid_head():
        _, writer = await connect()
        writer.write(b"GET /some/where HTTP/1.1\r\nHost: so")
        await writer.drain()
        await asyncio.sleep(random.random() * 0.2)
        (reset_and_close(writer) if random.random() < 0.5 else writer.close())
        rec("disconnects", "left-mid-head")

    async def mid_body():
        _, writer = await connect()
        writer.write(b"POST /echo/cut HTTP/1.1\r\nHost: soak\r\nContent-Length: 1000000\r\n\r\n"
                     + os.urandom(random.choice([1, 1000, 100_000, 500_000])))
        await writer.drain()
        await asyncio.sleep(random.random() * 0.1)
        (reset_and_close(writer) if random.random() < 0.5 else writer.close())
        rec("disconnects", "left-mid-body")

    async def waiting():
        path = random.choice(["/slow/wait?s=1", "/shed/queued"])
        _, writer = await connect()
        writer.write(request_bytes("GET", path))
        await writer.drain()
        await asyncio.sleep(random.random() * 0.4)
        (reset_and_close(writer) if random.random() < 0.5 else writer.close())
        rec("disconnects", "left-waiting")

    async def mid_response():
        reader, writer = await connect(rcvbuf=random.choice([None, 16384]))
        path = random.choice(["/big", "/drip/x"])
        writer.write(request_bytes("GET", path))
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        await reader.read(random.choice([1, 5000, 65536]))
        (reset_and_close(writer) if random.random() < 0.5 else writer.close())
        rec("disconnects", "left-mid-response")

    async def half_close():
        reader, writer = await connect()
        writer.write(request_bytes("GET", random.choice(["/", "/drip/x", "/slow/hc?s=0.2"])))
        await writer.drain()
        writer.write_eof()
        try:
            status, _, _ = await asyncio.wait_for(read_response(reader), 5)
            rec("disconnects", f"{status} after half-close")
        except asyncio.IncompleteReadError:
            rec("disconnects", "half-close-abandoned")   # README: a half-close means gone
        finally:
            await close(writer)

    kinds = [mid_head, mid_body, waiting, mid_response, half_close]

    async def one():
        kind = random.choice(kinds)
        try:
            await kind()
        except Exception as error:  # noqa: BLE001
            rec("disconnects", f"{kind.__name__}: {classify(error)}")

    await asyncio.gather(*(until(deadline, "disconnects", one, pause=0.05) for _ in range(2)))


async def pipelined(deadline):
    async def burst():
        reader, writer = await connect()
        try:
            methods, kinds = [], []
            data = b""
            for i in range(20):
                kind = random.choice(["GET", "GET", "HEAD", "POST", "ECHO"])
                last = "Connection: close\r\n" if i == 19 else ""
                if kind == "GET":
                    data += request_bytes("GET", f"/p/{i}", extra=last)
                elif kind == "HEAD":
                    data += request_bytes("HEAD", "/big", extra=last)
                elif kind == "POST":
                    data += request_bytes("POST", "/upload", os.urandom(random.randint(0, 5000)),
                                          extra=last)
                else:
                    data += request_bytes("GET", "/echo/p", extra=last)
                methods.append("HEAD" if kind == "HEAD" else "GET")
                kinds.append(kind)
            writer.write(data)
            await writer.drain()
            for i, (method, kind) in enumerate(zip(methods, kinds)):
                status, headers, _ = await read_response(reader, method=method)
                if status == 200:
                    rec("pipelined", status)
                else:
                    reason = headers.get("x-breakwater-reason", "app")
                    rec("pipelined", f"{status} {reason}")
                    NOTES["pipelined"][f"{status} {reason} for request {i + 1} of 20, a {kind}"] += 1
            if await asyncio.wait_for(reader.read(1), 5):
                rec("pipelined", "not-closed-after-close")
        finally:
            await close(writer)

    async def abandoned():
        # A burst whose client reads a few answers and leaves with the rest in flight.
        reader, writer = await connect()
        writer.write(b"".join(request_bytes("GET", random.choice(["/", "/big", "/drip/y"]))
                              for _ in range(10)))
        await writer.drain()
        for _ in range(random.randint(0, 3)):
            status, _, _ = await read_response(reader)
            rec("pipelined", status)
        (reset_and_close(writer) if random.random() < 0.5 else writer.close())
        rec("pipelined", "left-mid-burst")

    async def one():
        kind = burst if random.random() < 0.8 else abandoned
        try:
            await kind()
        except Exception as error:  # noqa: BLE001
            rec("pipelined", f"{kind.__name__}: {classify(error)}")

    await until(deadline, "pipelined", one, pause=0.1)


MALFORMED = [
    (b"GET / HTTP/1.1\r\nHost: soak\r\nContent-Length: abc\r\n\r\n", 400),
    (b"POST /upload HTTP/1.1\r\nHost: soak\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nUser-Agent: soak\r\n\r\n", 400),
    (b"POST /upload HTTP/1.1\r\nHost: soak\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /upload HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: soak\n\n", 400),
    (b"GET / HTTP/1.1\r\nHost: soak\r\nHost: other\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: soak\r\nX-Folded: a\r\n b\r\n\r\n", 400),
    (bytes.fromhex("160301020001") + os.urandom(300), 400),
    (b"GET / HTTP/1.1\r\nHost: soak\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n", 431),
    (b"POST /upload HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), 413),
]


async def malformed(deadline):
    async def one():
        data, expected = random.choice(MALFORMED)
        reader, writer = await connect()
        try:
            writer.write(data)
            await writer.drain()
            status, headers, _ = await asyncio.wait_for(read_response(reader), 5)
            rec("malformed", status)
            if status != expected:
                NOTES["malformed"][f"{status} for a request expecting {expected}"] += 1
            if await asyncio.wait_for(reader.read(1), 5):
                rec("malformed", "not-closed")
        finally:
            await close(writer)

    async def slowloris():
        reader, writer = await connect()
        try:
            for byte in b"GET /slowloris HTTP/1.1\r\nHost: soak\r\nX-Slow: " + b"s" * 100:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)
                if reader.at_eof() or len(reader._buffer):  # the proxy answered already
                    break
            status, _, _ = await asyncio.wait_for(read_response(reader), 5)
            rec("malformed", status)
        finally:
            await close(writer)

    await asyncio.gather(until(deadline, "malformed", one, pause=0.02),
                         until(deadline, "malformed", slowloris, pause=0.5, label="slowloris"))


async def shed(deadline):
    async def one(leave_early):
        reader, writer = await connect()
        try:
            writer.write(request_bytes("GET", "/shed/x"))
            await writer.drain()
            if leave_early:
                await asyncio.sleep(0.05)
                reset_and_close(writer)
                rec("shed", "left-queued")
                return
            status, headers, _ = await read_response(reader)
            if status == 503:
                rec("shed", f"503 {headers.get('x-breakwater-reason', 'app')}")
            else:
                rec("shed", status)
        finally:
            await close(writer)

    async def burst():
        results = await asyncio.gather(*(one(i % 6 == 5) for i in range(12)),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                rec("shed", classify(result))
        await asyncio.sleep(0.5)

    await until(deadline, "shed", burst)


async def breaker(deadline):
    async def on(path):
        reader, writer = await connect()
        try:
            for _ in range(20):
                if time.monotonic() > deadline:
                    break
                writer.write(request_bytes("GET", path))
                await writer.drain()
                status, headers, _ = await read_response(reader)
                reason = headers.get("x-breakwater-reason")
                rec("breaker", f"{status} {path.split('/')[1]}" + (f" {reason}" if reason else ""))
                if headers.get("connection", "").lower() == "close":
                    return
                await asyncio.sleep(0.05)
        finally:
            await close(writer)

    await asyncio.gather(until(deadline, "breaker", lambda: on("/status/500")),
                         until(deadline, "breaker", lambda: on("/flaky/x")))


async def slow_backend(deadline):
    async def one():
        # Half too slow for the route's 500 ms timeout, half in time, so its breaker (rate 0.9)
        # mostly stays closed and the slow ones end in 504.
        reader, writer = await connect()
        try:
            writer.write(request_bytes("GET", random.choice(["/slow/x?s=2", "/slow/y?s=0.05"])))
            await writer.drain()
            status, headers, _ = await read_response(reader)
            rec("slow-backend", f"{status} {headers.get('x-breakwater-reason', 'app')}")
        finally:
            await close(writer)

    await asyncio.gather(*(until(deadline, "slow-backend", one, pause=0.1) for _ in range(3)))


async def websocket(deadline):
    async def one():
        reader, writer = await connect()
        try:
            writer.write(b"GET /ws/chat HTTP/1.1\r\nHost: soak\r\nConnection: Upgrade\r\n"
                         b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            if status != 101:
                rec("websocket", status)
                return
            for _ in range(random.randint(1, 20)):
                message = os.urandom(random.choice([10, 1000, 70_000]))
                writer.write(message)
                await writer.drain()
                if await reader.readexactly(len(message)) != message:
                    rec("websocket", "echo-mismatch")
                    return
                await asyncio.sleep(0.02)
            rec("websocket", "101 echo ok")
            if random.random() < 0.3:
                reset_and_close(writer)
        finally:
            await close(writer)

    await asyncio.gather(*(until(deadline, "websocket", one, pause=0.1) for _ in range(2)))


async def admin(deadline, proxy_pid):
    last_reload = time.monotonic()
    while time.monotonic() < deadline:
        for path in ["/metrics", "/health/circuit-breakers", "/health/ready"]:
            try:
                reader, writer = await connect(ADMIN_PORT)
                try:
                    writer.write(request_bytes("GET", path, extra="Connection: close\r\n"))
                    await writer.drain()
                    status, _, _ = await asyncio.wait_for(read_response(reader), 10)
                    rec("admin", status)
                finally:
                    await close(writer)
            except Exception as error:  # noqa: BLE001
                rec("admin", classify(error))
        if time.monotonic() - last_reload > 20:
            os.kill(proxy_pid, signal.SIGHUP)
            rec("admin", "SIGHUP")
            last_reload = time.monotonic()
        await asyncio.sleep(3)


async def keepalive_gets(seconds, rate):
    """h2load (or wrk) at a fixed rate over 8 keep-alive connections, for the whole run."""
    connections = 8
    urls = [f"http://{HOST}:{PROXY_PORT}/", f"http://{HOST}:{PROXY_PORT}/small/a?b=c"]
    if shutil.which("h2load"):
        argv = ["h2load", "--h1", "-t1", f"-c{connections}", f"--rps={max(1, rate // connections)}",
                f"-D{seconds}", *urls]
    else:
        script = os.path.join(WORK, "delay.lua")
        with open(script, "w") as f:
            f.write(f"function delay() return {int(1000 * connections / rate)} end\n")
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script, urls[0]]
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    out = (await process.communicate())[0].decode(errors="replace")
    with open(os.path.join(WORK, "keepalive-get.out"), "w") as f:
        f.write(out)
    if argv[0] == "h2load":
        codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
        failed = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, (\d+) errored", out)
        if not codes:
            rec("keepalive-get", "h2load-output-unreadable")
            return
        for label, count in zip(["2xx", "3xx", "4xx", "5xx"], codes.groups()):
            if int(count):
                STATS["keepalive-get"][label] += int(count)
        if failed and int(failed.group(1)) + int(failed.group(2)):
            STATS["keepalive-get"]["failed/errored"] += int(failed.group(1)) + int(failed.group(2))
    else:
        total = int(re.search(r"(\d+) requests in", out).group(1))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        bad = int(non2xx.group(1)) if non2xx else 0
        STATS["keepalive-get"]["2xx/3xx"] += total - bad
        if bad:
            STATS["keepalive-get"]["other"] += bad
        if "Socket errors" in out:
            STATS["keepalive-get"]["socket-errors"] += 1


# --- the processes -----------------------------------------------------------------------------

def write(name, text):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def start_backend():
    with open(os.path.join(WORK, "big.bin"), "wb") as f:
        f.write(os.urandom(BIG_BYTES))
    app = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve-app", str(APP_PORT)],
                           stdout=subprocess.DEVNULL, stderr=open(os.path.join(WORK, "app.err"), "w"),
                           start_new_session=True)
    conf = write("backend.conf", f"""
worker_processes 1;
daemon off;
pid {WORK}/backend.pid;
error_log {WORK}/backend-error.log;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_max_body_size 0;
  keepalive_requests 10000000;
  keepalive_timeout 60s;
  upstream app {{ server {HOST}:{APP_PORT}; keepalive 32; }}
  server {{
    listen {HOST}:{BACKEND_PORT} backlog=4096;
    location / {{ return 200 "ok"; }}
    location /big {{ default_type application/octet-stream; alias {WORK}/big.bin; }}
    location = /status/500 {{ return 500 "broken"; }}
    location /upload {{ return 200 "ok"; }}   # nginx reads and discards the body
    location /ws/ {{
      proxy_pass http://{HOST}:{APP_PORT};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 300s;
    }}
    location ~ ^/(slow|shed|flaky|echo|drip)/ {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 300s;
    }}
  }}
}}
""")
    nginx = subprocess.Popen(["nginx", "-p", WORK, "-c", conf], stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(WORK, "backend.err"), "w"), start_new_session=True)
    wait_until(lambda: http_status(BACKEND_PORT, "/") == 200, "nginx")
    wait_until(lambda: http_status(BACKEND_PORT, "/echo/x") == 200, "the app behind nginx")
    return [app, nginx]


def proxy_config(threads):
    return f"""
listen = "{HOST}:{PROXY_PORT}"
upstream = "{HOST}:{BACKEND_PORT}"

[server]
threads = {threads}
header_read_timeout = "2s"
idle_timeout = "{IDLE_TIMEOUT_S}s"
max_body_bytes = {MAX_BODY}

[upstream_pool]
idle_timeout = "{IDLE_TIMEOUT_S}s"

[admin]
listen = "{HOST}:{ADMIN_PORT}"

[concurrency]
soft_limit = 200
hard_limit = 250

[drain]
delay = "0s"
timeout = "5s"

[log]
access = true          # to access.log, summarised at the end
level = "warning"

[[route]]
name = "shed"
path_prefix = "/shed/"
[route.concurrency]
soft_limit = 2
hard_limit = 4
queue_timeout = "250ms"

[[route]]
name = "broken"
path_prefix = "/status/"
[route.retry]
attempts = 1
[route.breaker]
failure_threshold = 3
recovery_timeout = "1s"
max_recovery_timeout = "2s"

[[route]]
name = "flaky"
path_prefix = "/flaky/"
[route.retry]
attempts = 1
[route.breaker]
failure_threshold = 3
recovery_timeout = "1s"
max_recovery_timeout = "2s"
success_threshold = 2

[[route]]
name = "slow"
path_prefix = "/slow/"
timeout = "500ms"
[route.retry]
attempts = 1
[route.breaker]
failure_threshold = 20
failure_rate = 0.9
recovery_timeout = "1s"
max_recovery_timeout = "2s"

[[route]]
name = "big"
path_prefix = "/big"
body_timeout = "5s"

[[route]]
name = "ws"
path_prefix = "/ws/"
"""


def http_status(port, path):
    try:
        with socket.create_connection((HOST, port), timeout=5) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return int(data.split(b" ", 2)[1])
    except (OSError, IndexError, ValueError):
        return None


def wait_until(condition, what, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    sys.exit(f"soak: {what} did not come up; see {WORK}")


def sample(pid):
    """(VmRSS in KB, open fds), or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return None


# --- the run -----------------------------------------------------------------------------------

async def load(args, proxy, samples, started):
    seconds = int(args.minutes * 60)
    deadline = time.monotonic() + seconds
    proxy_died = asyncio.Event()

    async def sampler():
        while time.monotonic() < deadline:
            await asyncio.sleep(args.sample_seconds)
            figures = sample(proxy.pid)
            if figures is None or proxy.poll() is not None:
                proxy_died.set()
                return
            samples.append((time.monotonic() - started, *figures, "load"))
            if args.verbose:
                print(f"  t={samples[-1][0]:6.1f}s rss={figures[0] / 1024:7.1f} MB fds={figures[1]}",
                      file=sys.stderr, flush=True)

    workers = [keepalive_gets(seconds, args.rate), short_connections(deadline, args.conn_rate),
               posts(deadline), slow_readers(deadline, 8),
               disconnects(deadline), pipelined(deadline), malformed(deadline), shed(deadline),
               breaker(deadline), slow_backend(deadline), websocket(deadline),
               admin(deadline, proxy.pid)]
    tasks = [asyncio.create_task(w) for w in workers]
    sampling = asyncio.create_task(sampler())
    died = asyncio.create_task(proxy_died.wait())
    await asyncio.wait([sampling, died], return_when=asyncio.FIRST_COMPLETED)
    if proxy_died.is_set():
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return False
    # The load is over: let the workers finish what they started (a 2 s slow request, a stalled
    # reader's wait), then stop the stragglers.
    done, pending = await asyncio.wait(tasks, timeout=30)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.exception():
            rec("soak", f"worker crashed: {task.exception()!r}")
    died.cancel()
    return proxy.poll() is None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--breakwater", required=True, help="the binary to soak")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rss-growth-mb", type=float, default=16,
                        help="fail when RSS grows more than this from the end of warm-up to the end")
    parser.add_argument("--fd-slack", type=int, default=10,
                        help="fail when fds end more than this above the idle baseline")
    parser.add_argument("--settle-seconds", type=float, default=15,
                        help="after the load, before the final sample (> the 5 s idle timeouts)")
    parser.add_argument("--sample-seconds", type=float, default=5)
    parser.add_argument("--rate", type=int, default=400, help="keep-alive GETs per second")
    parser.add_argument("--conn-rate", type=int, default=100,
                        help="new connections per second from the short-connection worker")
    parser.add_argument("--threads", type=int, default=1, help="server.threads")
    parser.add_argument("--asan", action="store_true",
                        help="the binary is an AddressSanitizer build: check its report at exit")
    parser.add_argument("--verbose", action="store_true", help="print every sample")
    args = parser.parse_args()

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    children = start_backend()
    conf = write("proxy.conf", proxy_config(args.threads))
    env = dict(os.environ)
    if args.asan:
        supp = write("lsan.supp", "# TOMLKit 0.6.0 leaks on every parse; see fuzz/lsan.supp\nleak:TOMLKit\n")
        env["ASAN_OPTIONS"] = "detect_leaks=1:halt_on_error=1:print_summary=1:color=never"
        env["LSAN_OPTIONS"] = f"suppressions={supp}:print_suppressions=1"
    check = subprocess.run([args.breakwater, "check", "--config", conf], capture_output=True,
                           text=True, env=env)
    if check.returncode != 0:
        sys.exit(f"soak: the configuration is invalid:\n{check.stdout}{check.stderr}")
    err_path = os.path.join(WORK, "breakwater.err")
    access_path = os.path.join(WORK, "access.log")
    proxy = subprocess.Popen([args.breakwater, "--config", conf], stdout=open(access_path, "w"),
                             stderr=open(err_path, "w"), env=env)
    failures = []
    samples = []   # (seconds since start, rss KB, fds, phase)
    started = time.monotonic()
    exit_status = None
    try:
        wait_until(lambda: http_status(PROXY_PORT, "/") == 200 or proxy.poll() is not None,
                   "breakwater")
        if proxy.poll() is not None:
            sys.exit(f"soak: breakwater exited at once:\n{open(err_path).read()[-3000:]}")
        for _ in range(5):
            http_status(PROXY_PORT, "/")
        time.sleep(1)
        samples.append((time.monotonic() - started, *sample(proxy.pid), "idle"))
        print(f"soak: {args.minutes:g} min of mixed traffic against {args.breakwater}"
              f" (pid {proxy.pid}); work dir {WORK}", file=sys.stderr, flush=True)

        alive = asyncio.run(load(args, proxy, samples, started))
        load_end = time.monotonic() - started
        if alive:
            settle_until = time.monotonic() + args.settle_seconds
            while time.monotonic() < settle_until:
                time.sleep(1)
                figures = sample(proxy.pid)
                if figures is None:
                    alive = False
                    break
                samples.append((time.monotonic() - started, *figures, "settle"))
        if alive and proxy.poll() is None:
            proxy.send_signal(signal.SIGTERM)
            drain_started = time.monotonic()
            try:
                exit_status = proxy.wait(timeout=60 if args.asan else 20)
            except subprocess.TimeoutExpired:
                failures.append("did not exit within 20 s of SIGTERM")
                proxy.kill()
                proxy.wait()
            drain_seconds = time.monotonic() - drain_started
        else:
            alive = False
            exit_status = proxy.wait()
    finally:
        if proxy.poll() is None:
            proxy.kill()
        for child in children:
            try:
                os.killpg(child.pid, signal.SIGTERM)
                child.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass

    # --- the verdict ---
    stderr = open(err_path, errors="replace").read()
    idle = samples[0]
    load_samples = [s for s in samples if s[3] == "load"]
    settled = samples[-1]
    warm_mark = min(60.0, args.minutes * 60 / 2) + idle[0]
    warm = next((s for s in load_samples if s[0] >= warm_mark), load_samples[-1] if load_samples else idle)
    peak = max(samples, key=lambda s: s[1])
    peak_fds = max(s[2] for s in samples)
    mb = lambda kb: kb / 1024  # noqa: E731

    print()
    print(f"Breakwater soak: {args.minutes:g} min of mixed traffic"
          f"{' (AddressSanitizer build)' if args.asan else ''}, server.threads = {args.threads},"
          f" {len(samples)} samples")
    print(f"  {'':40}{'RSS MB':>8}{'fds':>6}")
    rows = [("start (idle, before the load)", idle), (f"end of warm-up (t={warm[0]:.0f}s)", warm),
            (f"max (RSS's at t={peak[0]:.0f}s; fds' any time)", (0, peak[1], peak_fds)),
            ("end of load", load_samples[-1] if load_samples else idle),
            (f"end (after {args.settle_seconds:g} s settle)", settled)]
    for label, s in rows:
        print(f"  {label:40}{mb(s[1]):8.1f}{s[2]:6d}")
    if len(load_samples) >= 4:
        after = [s for s in load_samples if s[0] >= warm[0]]
        if len(after) >= 3:
            n = len(after)
            mt = sum(s[0] for s in after) / n
            mr = sum(s[1] for s in after) / n
            slope = (sum((s[0] - mt) * (s[1] - mr) for s in after)
                     / max(1e-9, sum((s[0] - mt) ** 2 for s in after)))
            print(f"  RSS trend after warm-up: {mb(slope) * 60:+.2f} MB/min (least squares over {n} samples)")
    back = next((s for s in samples if s[3] == "settle" and s[2] <= idle[2] + args.fd_slack), None)
    if back:
        print(f"  fds back within +{args.fd_slack} of idle {back[0] - load_end:.0f} s after the load")

    totals = collections.Counter()
    for worker, outcomes in STATS.items():
        for outcome, count in outcomes.items():
            status = re.match(r"(\d{3}|\dxx)(\D|$)", str(outcome))
            if status:
                totals[status.group(1)] += count
    print("\nRequests by status (all workers; keep-alive GETs by class):")
    print("  " + "  ".join(f"{k}: {v}" for k, v in sorted(totals.items())))
    print("By worker:")
    for worker in sorted(STATS):
        outcomes = ", ".join(f"{k} ×{v}" for k, v in sorted(STATS[worker].items(), key=lambda kv: str(kv[0])))
        print(f"  {worker:14} {outcomes}")
    access = collections.Counter()
    with open(access_path, errors="replace") as f:
        for line in f:
            try:
                entry = json.loads(line)
                access[(entry["route"], entry["status"], entry["reason"])] += 1
            except (ValueError, KeyError):
                access[("?", 0, "unreadable line")] += 1
    print("Breakwater's access log, by route, status and reason:")
    for (route, status, reason), count in sorted(access.items(), key=lambda kv: str(kv[0])):
        print(f"  {route:8} {status:3} {reason:22} ×{count}")
    for worker, notes in NOTES.items():
        for note, count in notes.items():
            print(f"  note: {worker}: {note} ×{count}")

    # --- pass or fail ---
    print()
    checks = []
    checks.append((alive, "the proxy stayed up" if alive else
                   f"the proxy DIED (exit status {exit_status}); last of its stderr:\n"
                   + stderr[-3000:]))
    if alive:
        checks.append((exit_status == 0, f"SIGTERM: drained and exited with status {exit_status}"
                       + (f" in {drain_seconds:.1f} s" if exit_status is not None else "")))
        fd_growth = settled[2] - idle[2]
        checks.append((fd_growth <= args.fd_slack,
                       f"fds after settle {settled[2]} vs idle {idle[2]}: {fd_growth:+d} (limit +{args.fd_slack})"))
        growth = mb(settled[1] - warm[1])
        if args.asan:
            print(f"  [info] RSS growth end of warm-up → end {growth:+.1f} MB (not judged under"
                  " ASan: its quarantine and shadow memory grow; LeakSanitizer judges leaks)")
        else:
            checks.append((growth <= args.rss_growth_mb,
                           f"RSS growth end of warm-up → end {growth:+.1f} MB (limit {args.rss_growth_mb:g} MB)"))
    if args.asan:
        report = [line for line in stderr.splitlines()
                  if "Sanitizer" in line or "SUMMARY" in line or "Suppressions used" in line]
        errors = [line for line in report if "ERROR:" in line or "SUMMARY:" in line]
        checks.append((not errors, "sanitizer: " + ("no report" if not errors else
                       "REPORTED:\n      " + "\n      ".join(errors[:10]) + f"\n      (full report: {err_path})")))
        suppressed = re.search(r"Suppressions used:\s*\n(.*?)\n-{5,}", stderr, re.S)
        if suppressed:
            print("  [info] LeakSanitizer suppressions used:\n      "
                  + "\n      ".join(suppressed.group(1).strip().splitlines()))
    for ok, text in checks:
        print(f"  [{'ok' if ok else 'FAIL'}] {text}")
    with open(os.path.join(WORK, "samples.csv"), "w") as f:
        f.write("seconds,rss_kb,fds,phase\n")
        for s in samples:
            f.write(f"{s[0]:.1f},{s[1]},{s[2]},{s[3]}\n")
    print(f"\nsamples: {WORK}/samples.csv; logs: {WORK}")
    sys.exit(0 if all(ok for ok, _ in checks) else 1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-app":
        try:
            asyncio.run(serve_app(int(sys.argv[2])))
        except KeyboardInterrupt:
            pass
        sys.exit(0)
    WORK = tempfile.mkdtemp(prefix="breakwater-soak-")
    os.chmod(WORK, 0o755)   # nginx's worker (not root) serves big.bin from here
    main()
