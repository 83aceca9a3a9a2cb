#!/bin/sh
# The function: server.py runs this script once per HTTP request, CGI-style.
#
# In:  REQUEST_METHOD, PATH_INFO, QUERY_STRING, CONTENT_TYPE, CONTENT_LENGTH and
#      HTTP_<NAME> for each request header (HTTP_USER_AGENT, ...) in the environment;
#      the request body on stdin.
# Out: header lines ("Status: 404", "Content-Type: text/plain"), an empty line, then the
#      body, on stdout. Output without a header block is all body (text/plain, 200).
#      Exiting non-zero answers 500; stderr goes to the function's log.
set -eu

if [ "$REQUEST_METHOD" = POST ]; then
    printf 'Content-Type: %s\n\n' "${CONTENT_TYPE:-application/octet-stream}"
    cat # echo the body back
    exit 0
fi

# The value of the query parameter "name", if any (no percent-decoding, to stay short).
name=$(printf '%s\n' "${QUERY_STRING:-}" | tr '&' '\n' | sed -n 's/^name=//p' | head -n 1)
printf 'Content-Type: text/plain; charset=utf-8\n\n'
printf 'Hello, %s!\n' "${name:-World}"
