"""A small app for Breakwater's supervisor tests, on Python's standard library only.

    python3 app.py PORT [close]

GET /health -> 200 (503 while sick); /pid -> the process id; /delay/MS -> "delayed" after MS ms;
/sick/MS -> the process id, then /health answers 503 for MS ms (the process stays up);
/pause-listener/MS -> "pausing", then the listening socket closes for MS ms (connects are
refused; connections already open stay); else "ok". With `close`, every connection closes
after its response, so each request needs a new connect.
"""
import os
import sys
import threading
import time

# How long the listener stays closed after the serving loop stops.
PAUSE = [0.0]
# Until when /health fails.
SICK_UNTIL = [0.0]
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        path = self.path.split("?")[0]
        if path.startswith("/delay/"):
            time.sleep(int(path.rsplit("/", 1)[1]) / 1000)
            body = b"delayed"
        elif path == "/pid":
            body = str(os.getpid()).encode()
        elif path.startswith("/sick/"):
            SICK_UNTIL[0] = time.monotonic() + int(path.rsplit("/", 1)[1]) / 1000
            body = str(os.getpid()).encode()
        elif path == "/health" and time.monotonic() < SICK_UNTIL[0]:
            body = b"sick"
            self.send_response(503)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        elif path.startswith("/pause-listener/"):
            PAUSE[0] = int(path.rsplit("/", 1)[1]) / 1000
            body = b"pausing"
            threading.Thread(target=self.server.shutdown, daemon=True).start()
        else:
            body = b"ok"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer.daemon_threads = True
    if sys.argv[2:] == ["close"]:
        Handler.protocol_version = "HTTP/1.0"
    while True:
        server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
        server.serve_forever()
        server.server_close()
        time.sleep(PAUSE[0])
