"""Counts visits in serval's key-value store with compare-and-set (Python standard library).

Every GET adds one to the key `visits` (or the key `?key=` names) and answers the new
count. The update reads the value and its ETag, then writes value + 1 with `If-Match:
<etag>` (or `If-None-Match: *` when the key is new); a 412 means another instance wrote
first, so it reads again and retries. serval gives every instance `SERVAL_KV_URL` and
`SERVAL_KV_TOKEN`.
"""

import http.server
import os
import urllib.error
import urllib.parse
import urllib.request

KV_URL = os.environ["SERVAL_KV_URL"]
KV_TOKEN = os.environ["SERVAL_KV_TOKEN"]
STORE = os.environ.get("KV_STORE", "default")


def kv(method, key, body=None, headers=None):
    url = f"{KV_URL}/{STORE}/{urllib.parse.quote(key)}"
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Authorization", f"Bearer {KV_TOKEN}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("ETag"), response.read()
    except urllib.error.HTTPError as error:
        return error.code, None, error.read()


def count_visit(key):
    while True:
        status, etag, body = kv("GET", key)
        if status == 404:
            current, condition = 0, {"If-None-Match": "*"}
        elif status == 200:
            current, condition = int(body), {"If-Match": etag}
        else:
            raise RuntimeError(f"reading {key}: {status} {body!r}")
        status, _, body = kv("PUT", key, str(current + 1).encode(), condition)
        if status in (200, 201):
            return current + 1
        if status != 412:
            raise RuntimeError(f"writing {key}: {status} {body!r}")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        count = count_visit(query.get("key", ["visits"])[0])
        body = f"{count}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), Handler)
    server.serve_forever()
