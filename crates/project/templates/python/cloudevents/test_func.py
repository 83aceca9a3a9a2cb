"""Unit tests of func.handle(): `python3 -m unittest`."""

import unittest

from cloudevent import CloudEvent, from_http, to_http
from func import handle


class HandleTest(unittest.TestCase):
    def test_answers_an_event_with_its_data(self):
        event = CloudEvent(type="com.example.order", source="/shop", data={"item": "book"})
        reply = handle(event)
        self.assertEqual(reply.type, "com.example.order.reply")
        self.assertEqual(reply.subject, event.id)
        self.assertEqual(reply.data, {"item": "book"})

    def test_does_not_answer_a_reply(self):
        self.assertIsNone(handle(CloudEvent(type="com.example.order.reply", source="/x")))

    def test_binary_and_structured_requests_give_the_same_event(self):
        binary = from_http(
            {
                "ce-specversion": "1.0",
                "ce-id": "1",
                "ce-source": "/shop",
                "ce-type": "com.example.order",
                "content-type": "application/json",
            },
            b'{"item": "book"}',
        )
        structured = from_http(
            {"content-type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "id": "1", "source": "/shop", "type": "com.example.order",'
            b' "datacontenttype": "application/json", "data": {"item": "book"}}',
        )
        self.assertEqual(binary, structured)
        headers, body = to_http(handle(binary))
        self.assertEqual(headers["ce-type"], "com.example.order.reply")
        self.assertEqual(body, b'{"item": "book"}')


if __name__ == "__main__":
    unittest.main()
