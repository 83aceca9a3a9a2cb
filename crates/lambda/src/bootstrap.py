# serval's runtime client for Python Lambda handlers: the standard library only.
# Loads _HANDLER ("module.function") from LAMBDA_TASK_ROOT, then pulls invocations from the
# Lambda Runtime API at AWS_LAMBDA_RUNTIME_API and answers each with the handler's result
# (JSON) or its error ({"errorMessage", "errorType", "stackTrace"}).
import http.client
import importlib
import json
import os
import sys
import time
import traceback

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
BASE = "/2018-06-01/runtime"


_connection = None


def call(method, path, body=None, headers=None):
    """One request to the Runtime API on a kept-alive connection (opened again once if it
    broke)."""
    global _connection
    for attempt in (0, 1):
        if _connection is None:
            _connection = http.client.HTTPConnection(API)
        try:
            _connection.request(method, BASE + path, body=body, headers=headers or {})
            response = _connection.getresponse()
            data = response.read()
            return response.status, dict((k.lower(), v) for k, v in response.getheaders()), data
        except (http.client.HTTPException, OSError):
            _connection.close()
            _connection = None
            if attempt:
                raise


def error_document(error):
    return json.dumps({
        "errorMessage": str(error),
        "errorType": type(error).__name__,
        "stackTrace": traceback.format_tb(error.__traceback__),
    }).encode()


class Context:
    def __init__(self, headers):
        self.aws_request_id = headers.get("lambda-runtime-aws-request-id", "")
        self.invoked_function_arn = headers.get("lambda-runtime-invoked-function-arn", "")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.client_context = None
        self.identity = None
        self._deadline_ms = int(headers.get("lambda-runtime-deadline-ms", "0"))

    def get_remaining_time_in_millis(self):
        return max(0, self._deadline_ms - int(time.time() * 1000))


def load_handler():
    root = os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())
    sys.path.insert(0, root)
    module_name, _, function_name = os.environ["_HANDLER"].rpartition(".")
    return getattr(importlib.import_module(module_name.replace("/", ".")), function_name)


def main():
    try:
        handler = load_handler()
    except Exception as error:  # the start failed: say so, then stop
        call("POST", "/init/error", error_document(error),
             {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"})
        sys.exit(1)
    while True:
        status, headers, payload = call("GET", "/invocation/next")
        if status != 200:
            sys.exit(1)
        request_id = headers["lambda-runtime-aws-request-id"]
        os.environ["_X_AMZN_TRACE_ID"] = headers.get("lambda-runtime-trace-id", "")
        try:
            event = json.loads(payload) if payload else None
            result = json.dumps(handler(event, Context(headers))).encode()
            path, body, kind = "/invocation/%s/response" % request_id, result, {}
        except Exception as error:
            traceback.print_exc()
            path, body = "/invocation/%s/error" % request_id, error_document(error)
            kind = {"Lambda-Runtime-Function-Error-Type": "Function.Unhandled"}
        # The invocation's output is written out before its answer, for its log.
        sys.stdout.flush()
        sys.stderr.flush()
        call("POST", path, body, dict(kind, **{"Content-Type": "application/json"}))


main()
