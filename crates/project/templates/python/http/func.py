"""The function: serval calls handle() with every HTTP request.

`request` has method, path, query (each parameter's first value), query_string,
headers (lower-case names), body (bytes), text() and json().

Return the response body: a str (sent as text/plain), bytes, None, or a dict or list
(sent as JSON); or a tuple (body, status) or (body, status, headers).
"""


def handle(request):
    if request.method == "POST":
        return {"received": request.text()}
    name = request.query.get("name") or "World"
    return f"Hello, {name}!\n"
