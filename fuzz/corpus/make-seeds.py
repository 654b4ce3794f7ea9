#!/usr/bin/env python3
"""Writes the seed corpora: fuzz/corpus/request/seed-* and fuzz/corpus/config/seed-*.

Only for people changing the seeds (the files are committed; run.sh does not need Python).
A request seed's first byte is the mode (see Mode in Sources/FuzzRequest/FuzzRequest.swift):
bits 0-1 read size (all, 1, 3, 64 bytes), bits 2-3 the app's answer (content-length, chunked,
early, HTTP/1.0 until close), 0x10 small limits, 0x20 client closes at the end, 0x40 11 s pass,
0x80 the app accepts upgrades.
"""
import pathlib
import re

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# Mode bytes.
ALL, ONE, THREE, SIXTYFOUR = 0, 1, 2, 3
CL, CHUNKED, EARLY, UNTIL_CLOSE = 0 << 2, 1 << 2, 2 << 2, 3 << 2
SMALL, CLOSE, TIME, UPGRADE = 0x10, 0x20, 0x40, 0x80

requests = {
    "get": (ALL, b"GET / HTTP/1.1\r\nHost: app.example\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n"),
    "get-bytewise": (ONE, b"GET /items?id=7 HTTP/1.1\r\nHost: app.example\r\n\r\n"),
    "post-content-length": (CL, b"POST /api/v1/items HTTP/1.1\r\nHost: app.example\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"name\":\"x\"}\n"),
    "post-chunked": (THREE | CHUNKED, b"POST /upload HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"),
    "pipelined": (ALL, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /after-close HTTP/1.1\r\nHost: h\r\n\r\n"),
    "pipelined-chunked-answers": (SIXTYFOUR | CHUNKED, b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nHEAD /2 HTTP/1.1\r\nHost: h\r\n\r\nDELETE /3 HTTP/1.1\r\nHost: h\r\n\r\n"),
    "http10-keep-alive": (ALL, b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /old2 HTTP/1.0\r\n\r\nGET /never HTTP/1.0\r\n\r\n"),
    "websocket-upgrade": (UPGRADE, b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"),
    "websocket-refused": (ALL, b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n"),
    "upgrade-with-body": (UPGRADE | THREE, b"POST /up HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 4\r\n\r\nbodyPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    "expect-continue": (ALL, b"PUT /file HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"),
    "head": (CHUNKED, b"HEAD /big HTTP/1.1\r\nHost: h\r\n\r\nGET /after-head HTTP/1.1\r\nHost: h\r\n\r\n"),
    "connection-nominated": (ALL, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Secret, keep-alive\r\nX-Secret: s3cr3t\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\nX-Other: kept\r\n\r\n"),
    "forwarding-headers": (ALL, b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 198.51.100.1\r\nX-Forwarded-Proto: https\r\nX-Request-ID: abc-123\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\ntracestate: a=b\r\n\r\n"),
    "absolute-form": (ALL, b"GET http://other.example/admin?x=1 HTTP/1.1\r\nHost: app.example\r\n\r\n"),
    "connect": (ALL, b"CONNECT app.example:443 HTTP/1.1\r\nHost: app.example:443\r\n\r\nGET /inner HTTP/1.1\r\nHost: h\r\n\r\n"),
    "connect-with-length": (EARLY, b"CONNECT app.example:443 HTTP/1.1\r\nHost: app.example:443\r\nContent-Length: 5\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n"),
    "options-star": (ALL, b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"),
    "early-answer": (EARLY | THREE, b"POST /slow-reader HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789GET /next HTTP/1.1\r\nHost: h\r\n\r\n"),
    "until-close": (UNTIL_CLOSE, b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n"),
    "body-too-large": (SMALL, b"POST /big HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + b"a" * 64 + b"\r\n1\r\nb\r\n0\r\n\r\n"),
    "header-too-large": (SMALL | ONE, b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"x" * 600 + b"\r\n\r\n"),
    "many-headers": (ALL, b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n"),
    "slow-head-timeout": (TIME | ONE, b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: "),
    "client-closes-mid-body": (CLOSE, b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\npartial"),
}

# Tests/BreakwaterTests/Proxy/SmugglingTests.swift, each followed by a request that must never
# reach the app.
smuggling = {
    "cl-te": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "te-cl": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
    "te-not-chunked-last": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "te-gzip-only": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n",
    "nul-in-header": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
    "bad-content-length": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\nhello",
    "two-host-headers": b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    "no-host-http11": b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\nHost: x\n\n",
    "duplicate-content-length": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "content-length-list": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
    "te-chunked-twice": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "chunk-size-overflow": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF1\r\nx\r\n0\r\n\r\n",
}

out = HERE / "request"
out.mkdir(exist_ok=True)
for name, (mode, data) in requests.items():
    (out / f"seed-{name}").write_bytes(bytes([mode]) + data)
for name, data in smuggling.items():
    (out / f"seed-smuggling-{name}").write_bytes(bytes([ALL]) + data + b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")

# Configuration seeds: the shipped files, the unit tests' texts, and variants.
configs = {
    "example": (ROOT / "proxy.conf.example").read_text(),
    "fastapi": (ROOT / "examples" / "fastapi" / "proxy.conf").read_text(),
    "minimal": 'upstream = "127.0.0.1:8000"\n',
    "unix": 'listen = "[::1]:8080"\nupstream = "unix:/run/app.sock"\n[admin]\nlisten = "127.0.0.1:0"\ntoken_env = "TOKEN"\n',
    "routes": '''upstream = "127.0.0.1:8000"
[defaults]
timeout = "10s"
body_timeout = "1m"
[defaults.breaker]
failure_threshold = 5
failure_rate = 0.5
window = 100
minimum_requests = 10
recovery_timeout = "30s"
max_recovery_timeout = "5m"
success_threshold = 3
half_open_requests = 1
failure_statuses = [500, 502, 503, 504]
[[route]]
name = "api"
path_prefix = "/api/"
methods = ["GET", "post"]
timeout = "250ms"
[route.concurrency]
soft_limit = 8
hard_limit = 24
queue_timeout = "1.5s"
[route.retry]
attempts = 3
backoff = "25ms"
max_backoff = "250ms"
on = ["connect-failure", "reset", "timeout", "503"]
budget = 0.2
[route.fallback]
status = 503
content_type = "application/json"
body = '{"items": []}'
[[route]]
name = "health"
path = "/health"
''',
    "inline-tables": 'upstream = "127.0.0.1:8000"\nserver = { threads = 4, max_body_bytes = "1MiB" }\nroute = [ { name = "a", path = "/a", retry = { attempts = 2 } } ]\n',
    "dotted-keys": 'upstream = "127.0.0.1:8000"\nserver.threads = 2\nserver."idle_timeout" = "1h"\ntrace.request_id_header = "X-Correlation-ID"\ntrace.traceparent = false\nlog.level = "DEBUG"\nlog.access = false\n',
    "app": '[app]\ncommand = ["uvicorn", "app:app", "--port", "{port}"]\nworkers = 4\nbase_port = 9000\nrestart = "on-failure"\nrestart_backoff = "500ms"\nstop_timeout = "10s"\n[readiness]\npath = "/health"\ninterval = "2s"\ntimeout = "1s"\nhealthy_threshold = 1\nunhealthy_threshold = 3\nhold = "0s"\npublic_path = "/__ready"\n[drain]\ndelay = "0s"\ntimeout = "20s"\n',
    "errors": 'upstream = "nowhere"\n[server]\nthreads = "two"\nidle_timeout = "75"\nmax_header_bytes = "1ZB"\nbogus = 1\n[[route]]\nname = "api"\npath = "/a"\npath_prefix = "/b"\n[[route]]\nname = "api"\npath_prefix = "relative"\n[route.retry]\non = ["teapot"]\nmax_backoff = "1ms"\n[route.breaker]\nmax_recovery_timeout = "1s"\nminimum_requests = 1000\n',
    "syntax-error": 'upstream = "127.0.0.1:8000"\n[server\nthreads = 2\n',
    "multiline-strings": 'upstream = "127.0.0.1:8000"\n[[route]]\nname = "f"\npath = "/f"\n[route.fallback]\nbody = """\n{"a":\n 1}\n"""\ncontent_type = \'\'\'text/plain\'\'\'\n[server]\nthreads = 3\n',
    "arrays-multiline": 'upstream = "127.0.0.1:8000"\n[[route]]\nname = "m"\npath = "/m"\nmethods = [\n  "GET",\n  "PUT", # comment\n]\n[route.breaker]\nfailure_statuses = [\n 500,\n 599,\n]\nbad = 1\n',
    "no-upstream": '[server]\nthreads = 1\n',
    "same-listen": 'listen = "127.0.0.1:9901"\nupstream = "127.0.0.1:8000"\n',
    "quoted-table-names": 'upstream = "127.0.0.1:8000"\n["server"]\n"threads" = 2\n[ route . breaker ]\nwindow = 3\n',
    "numbers": 'upstream = "127.0.0.1:8000"\n[concurrency]\nsoft_limit = 1_000\nhard_limit = 0x10\nqueue_timeout = "1e3ms"\n[server]\nmax_connections = 9223372036854775807\nmax_body_bytes = 1.5e3\n',
}
# The unit tests' texts (multi-line string literals in ConfigLoaderTests.swift).
tests = (ROOT / "Tests" / "BreakwaterTests" / "Config" / "ConfigLoaderTests.swift").read_text()
for index, block in enumerate(re.findall(r'"""\n(.*?)\n\s*"""', tests, re.S)):
    lines = block.split("\n")
    indent = min((len(l) - len(l.lstrip(" ")) for l in lines if l.strip()), default=0)
    configs[f"unit-test-{index + 1}"] = "\n".join(l[indent:] for l in lines) + "\n"

out = HERE / "config"
out.mkdir(exist_ok=True)
for name, text in configs.items():
    (out / f"seed-{name}.conf").write_text(text)
print(f"{len(list((HERE / 'request').glob('seed-*')))} request seeds, {len(list(out.glob('seed-*')))} config seeds")
