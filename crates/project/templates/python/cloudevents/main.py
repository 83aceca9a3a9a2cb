#!/usr/bin/env python3
"""Serves the function in func.py: the harness of serval's python/cloudevents template.

Every POST is read as a CloudEvent (binary or structured content mode, see cloudevent.py)
and handed to func.handle(); the event it returns goes back in binary mode (200), None
is 204 No Content, an invalid event 400. Python's standard library only. Edit func.py;
this file rarely needs a change.

  PORT       the port to listen on (default 8080; serval sets it)
  BIND_ADDR  the address to listen on (default 0.0.0.0, every interface)

SIGTERM (or Ctrl-C) stops it: it stops accepting, lets the requests in flight finish
(at most 10 s) and exits 0.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import func
from cloudevent import InvalidEvent, from_http, to_http

DRAIN_SECONDS = 10


class InFlight:
    """Counts requests being handled, so that a shutdown can wait for them."""

    def __init__(self):
        self.count = 0
        self.changed = threading.Condition()

    def __enter__(self):
        with self.changed:
            self.count += 1

    def __exit__(self, *exc):
        with self.changed:
            self.count -= 1
            self.changed.notify_all()

    def wait_idle(self, timeout):
        with self.changed:
            return self.changed.wait_for(lambda: self.count == 0, timeout)


IN_FLIGHT = InFlight()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "serval-python"

    def do_POST(self):
        with IN_FLIGHT:
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                event = from_http(headers, self.read_body())
            except (InvalidEvent, ValueError) as e:
                self.respond(400, {"Content-Type": "text/plain"}, f"{e}\n".encode())
                return
            try:
                reply = func.handle(event)
            except Exception:
                traceback.print_exc()
                self.respond(500, {"Content-Type": "text/plain"}, b"internal error\n")
                return
            if reply is None:
                self.respond(204, {}, b"")
            else:
                self.respond(200, *to_http(reply))

    def do_other(self):
        self.respond(405, {"Allow": "POST", "Content-Type": "text/plain"}, b"send CloudEvents with POST\n")

    do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_other

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def respond(self, status, headers, body):
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        print(f'"{self.requestline}" {code}', flush=True)

    def log_message(self, format, *args):
        print(format % args, file=sys.stderr, flush=True)


def main():
    address = os.environ.get("BIND_ADDR") or "0.0.0.0"
    port = int(os.environ.get("PORT") or 8080)
    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True  # idle keep-alive connections do not hold up the exit

    def stop(signum, frame):
        # shutdown() waits for serve_forever() to return: call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"{{name}} listening on {address}:{server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.1)  # how soon a shutdown is seen
    server.server_close()
    IN_FLIGHT.wait_idle(DRAIN_SECONDS)


if __name__ == "__main__":
    main()
