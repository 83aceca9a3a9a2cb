"""Unit tests of func.handle(): `python3 -m unittest`."""

import unittest

from func import handle
from main import Request, to_response


class HandleTest(unittest.TestCase):
    def test_greets_by_name(self):
        self.assertEqual(handle(Request(query={"name": "serval"})), "Hello, serval!\n")

    def test_greets_the_world_without_a_name(self):
        self.assertEqual(handle(Request()), "Hello, World!\n")

    def test_answers_a_post_with_json(self):
        status, headers, body = to_response(handle(Request(method="POST", body=b"hi")))
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(body, b'{"received": "hi"}')


if __name__ == "__main__":
    unittest.main()
