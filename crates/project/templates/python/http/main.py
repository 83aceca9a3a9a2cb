#!/usr/bin/env python3
"""Serves the function in func.py over HTTP: the harness of serval's python/http template.

It uses Python's standard library only. Edit func.py; this file rarely needs a change.

  PORT       the port to listen on (default 8080; serval sets it)
  BIND_ADDR  the address to listen on (default 0.0.0.0, every interface)

SIGTERM (or Ctrl-C) stops it: it stops accepting, lets the requests in flight finish
(at most 10 s) and exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import func

DRAIN_SECONDS = 10


@dataclass
class Request:
    """An HTTP request as func.handle() gets it."""

    method: str = "GET"
    path: str = "/"
    # Each query parameter's first value; query_string has them all.
    query: dict = field(default_factory=dict)
    query_string: str = ""
    # Lower-case names; repeated fields joined with ", ".
    headers: dict = field(default_factory=dict)
    body: bytes = b""

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.body) if self.body else None


def to_response(result):
    """func.handle()'s result as (status, headers, body bytes): a body, (body, status) or
    (body, status, headers); a body is str, bytes, None, or anything JSON takes."""
    status, headers = 200, {}
    if isinstance(result, tuple):
        status = result[1] if len(result) > 1 else 200
        headers = result[2] if len(result) > 2 else {}
        result = result[0]
    headers = {str(k): str(v) for k, v in (headers or {}).items()}
    if result is None:
        body = b""
    elif isinstance(result, bytes):
        body, default_type = result, "application/octet-stream"
    elif isinstance(result, str):
        body, default_type = result.encode(), "text/plain; charset=utf-8"
    else:
        body, default_type = json.dumps(result).encode(), "application/json"
    if body and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = default_type
    return int(status), headers, body


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

    def handle_request(self):
        with IN_FLIGHT:
            try:
                body = self.read_body()
            except ValueError as e:
                self.respond(400, {"Content-Type": "text/plain"}, f"bad request body: {e}\n".encode())
                return
            url = urlsplit(self.path)
            headers = {}
            for name, value in self.headers.items():
                name = name.lower()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            query = {}
            for name, value in parse_qsl(url.query, keep_blank_values=True):
                query.setdefault(name, value)
            request = Request(self.command, url.path or "/", query, url.query, headers, body)
            try:
                status, headers, body = to_response(func.handle(request))
            except Exception:
                traceback.print_exc()
                status, headers, body = 500, {"Content-Type": "text/plain"}, b"internal error\n"
            self.respond(status, headers, body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_request

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
