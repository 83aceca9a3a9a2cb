#!/usr/bin/env python3
"""python-hello: a serval function written with Python's standard library only.

Like any Knative-style workload it listens for HTTP on $PORT (default 8080)
and reads its identity from the environment that serval injects:
K_SERVICE, K_REVISION (and K_CONFIGURATION).

  GET  any path -> "Hello <TARGET or World> from <K_SERVICE> (revision <K_REVISION>)!"
  POST any path -> the request body, echoed back with its content-type

One line is logged to stdout per request. SIGTERM stops it cleanly (exit 0).

Run by hand:  PORT=8080 K_SERVICE=python-hello python3 app.py
"""

import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TARGET = os.environ.get("TARGET") or "World"
SERVICE = os.environ.get("K_SERVICE") or "python-hello"
REVISION = os.environ.get("K_REVISION") or "unknown"


def log(message):
    print(message, flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "python-hello"

    def do_GET(self):
        body = f"Hello {TARGET} from {SERVICE} (revision {REVISION})!\n".encode()
        self.reply(200, "text/plain; charset=utf-8", body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        content_type = self.headers.get("Content-Type") or "application/octet-stream"
        self.reply(200, content_type, body)

    def reply(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        # One line per request, on stdout (the default goes to stderr).
        log(f'{self.client_address[0]} "{self.requestline}" {code}')

    def log_error(self, format, *args):
        print(f"python-hello: {format % args}", file=sys.stderr, flush=True)


def main():
    port = int(os.environ.get("PORT") or 8080)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True

    def on_sigterm(signum, frame):
        # shutdown() blocks until serve_forever() returns: call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    log(f"python-hello listening on 127.0.0.1:{port}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    log("python-hello: shutting down")


if __name__ == "__main__":
    main()
