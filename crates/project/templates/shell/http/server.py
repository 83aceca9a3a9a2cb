#!/usr/bin/env python3
"""Serves handler.sh over HTTP: the harness of serval's shell/http template.

Each request runs handler.sh once, CGI-style: the request's method, path, query and
headers in the environment (REQUEST_METHOD, PATH_INFO, QUERY_STRING, CONTENT_TYPE,
CONTENT_LENGTH, HTTP_<NAME>), its body on stdin; the script prints header lines, an
empty line and the body. Python's standard library only. Edit handler.sh; this file
rarely needs a change.

  PORT       the port to listen on (default 8080; serval sets it)
  BIND_ADDR  the address to listen on (default 0.0.0.0, every interface)

SIGTERM (or Ctrl-C) stops it: it stops accepting, lets the requests in flight finish
(at most 10 s) and exits 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HANDLER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "handler.sh")
HEADER = re.compile(r"^[A-Za-z0-9-]+:")

DRAIN_SECONDS = 10


def run_handler(method, path, query, headers, body):
    """Runs handler.sh for one request: (status, headers, body)."""
    env = dict(os.environ)
    env.update(REQUEST_METHOD=method, PATH_INFO=path, QUERY_STRING=query, SERVER_PROTOCOL="HTTP/1.1")
    env.update(GATEWAY_INTERFACE="CGI/1.1", CONTENT_LENGTH=str(len(body)))
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            env[key] = value
        elif key not in ("CONTENT_LENGTH", "PROXY"):  # HTTP_PROXY would be a client's to set
            env["HTTP_" + key] = value
    done = subprocess.run(["sh", HANDLER], input=body, stdout=subprocess.PIPE, env=env)
    if done.returncode != 0:
        print(f"handler.sh exited with {done.returncode}", file=sys.stderr, flush=True)
        return 500, {"Content-Type": "text/plain"}, b"internal error\n"
    return parse_output(done.stdout)


def parse_output(output):
    """handler.sh's output: header lines, an empty line, the body; or all body."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = output.partition(separator)
        if not found:
            continue
        lines = head.decode("utf-8", errors="replace").splitlines()
        if all(HEADER.match(line) for line in lines):
            status, headers = 200, {}
            for line in lines:
                name, value = (part.strip() for part in line.split(":", 1))
                if name.lower() == "status":
                    status = int(value.split()[0])
                else:
                    headers[name] = value
            return status, headers, body
    return 200, {"Content-Type": "text/plain; charset=utf-8"}, output


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
            try:
                status, headers, body = run_handler(self.command, url.path or "/", url.query, headers, body)
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
