"""CloudEvents 1.0 over HTTP: the event type and its binary and structured content modes.

Python's standard library only. A request is read as an event in binary mode (attributes
in ce-* headers, the data in the body) or structured mode (Content-Type
application/cloudevents+json: the whole event as JSON); a reply goes out in binary mode.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import quote, unquote

REQUIRED = ("specversion", "id", "source", "type")
OPTIONAL = ("datacontenttype", "dataschema", "subject", "time")


@dataclass
class CloudEvent:
    type: str
    source: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    specversion: str = "1.0"
    datacontenttype: Optional[str] = None
    dataschema: Optional[str] = None
    subject: Optional[str] = None
    time: Optional[str] = None
    # Parsed JSON when datacontenttype is JSON (or absent), str for text/*, else bytes.
    data: Any = None
    # Extension attributes: lower-case names, string values.
    extensions: dict = field(default_factory=dict)


class InvalidEvent(ValueError):
    """A request that is not a valid CloudEvent; the message says why."""


def is_json(content_type: Optional[str]) -> bool:
    media = (content_type or "application/json").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json") or media == "text/json"


def from_http(headers: dict, body: bytes) -> CloudEvent:
    """The event of a request; `headers` has lower-case names."""
    content_type = headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media == "application/cloudevents-batch+json":
        raise InvalidEvent("batched content mode is not supported: send one event per request")
    if media.startswith("application/cloudevents"):
        return structured(body)
    attributes = {name[3:]: unquote(value) for name, value in headers.items() if name.startswith("ce-")}
    if content_type:
        attributes["datacontenttype"] = content_type
    require(attributes)  # before the data: a request that is no event is told so
    data = decode_data(body, content_type) if body else None
    return make(attributes, data)


def structured(body: bytes) -> CloudEvent:
    try:
        document = json.loads(body)
    except ValueError as e:
        raise InvalidEvent(f"the body is not JSON: {e}") from None
    if not isinstance(document, dict):
        raise InvalidEvent("a structured event is a JSON object")
    data = document.pop("data", None)
    if "data_base64" in document:
        data = base64.b64decode(document.pop("data_base64"))
    attributes = {name: value if isinstance(value, str) else json.dumps(value) for name, value in document.items()}
    return make(attributes, data)


def decode_data(body: bytes, content_type: Optional[str]):
    if is_json(content_type):
        try:
            return json.loads(body)
        except ValueError as e:
            raise InvalidEvent(f"the data is not the JSON its content type says: {e}") from None
    if (content_type or "").lower().startswith("text/"):
        return body.decode("utf-8", errors="replace")
    return body


def require(attributes: dict):
    missing = [name for name in REQUIRED if not attributes.get(name)]
    if missing:
        raise InvalidEvent(f"not a CloudEvent: missing {', '.join(missing)}")
    if attributes["specversion"] != "1.0":
        raise InvalidEvent(f"specversion {attributes['specversion']!r} is not supported (1.0 is)")


def make(attributes: dict, data) -> CloudEvent:
    require(attributes)
    known = {name: attributes.pop(name) for name in REQUIRED + OPTIONAL if name in attributes}
    return CloudEvent(**known, data=data, extensions=attributes)


def header_value(value) -> str:
    """A ce-* header value: space, '"', '%' and what is not printable ASCII percent-encoded."""
    return "".join(c if "!" <= c <= "~" and c not in '"%' else quote(c) for c in str(value))


def to_http(event: CloudEvent):
    """`event` in binary mode: (headers, body)."""
    headers = {}
    for name in REQUIRED + ("dataschema", "subject", "time"):
        if getattr(event, name):
            headers[f"ce-{name}"] = header_value(getattr(event, name))
    for name, value in event.extensions.items():
        headers[f"ce-{name}"] = header_value(value)
    data, content_type = event.data, event.datacontenttype
    if data is None:
        body = b""
    elif isinstance(data, bytes):
        body, content_type = data, content_type or "application/octet-stream"
    elif isinstance(data, str) and not (content_type and is_json(content_type)):
        body, content_type = data.encode(), content_type or "text/plain; charset=utf-8"
    else:
        body, content_type = json.dumps(data).encode(), content_type or "application/json"
    if body:
        headers["Content-Type"] = content_type
    return headers, body
