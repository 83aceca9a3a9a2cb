"""The function: serval calls handle() with every CloudEvent that arrives.

`event` is a cloudevent.CloudEvent: type, source, id, subject, time, datacontenttype,
extensions, and data (parsed JSON when its content type is JSON, str for text/*, else
bytes). Return a CloudEvent to answer with one (a broker takes it as a new event), or
None to answer with none.
"""

from cloudevent import CloudEvent


def handle(event):
    if event.type.endswith(".reply"):
        return None  # never answer a reply: no event loops through a broker
    return CloudEvent(
        type=event.type + ".reply",
        source="{{name}}",
        subject=event.id,
        datacontenttype=event.datacontenttype,
        data=event.data,
    )
