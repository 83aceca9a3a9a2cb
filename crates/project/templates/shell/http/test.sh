#!/bin/sh
# Unit tests of handler.sh: runs it as server.py does and checks what it prints.
# Run: sh test.sh
set -eu
cd "$(dirname "$0")"

failures=0
check() { # name, expected text, actual output
    case "$3" in
    *"$2"*) echo "ok: $1" ;;
    *) echo "FAIL: $1: expected '$2' in:"; echo "$3"; failures=$((failures + 1)) ;;
    esac
}

out=$(REQUEST_METHOD=GET PATH_INFO=/ QUERY_STRING='name=serval' sh handler.sh </dev/null)
check "greets by name" "Hello, serval!" "$out"

out=$(REQUEST_METHOD=GET PATH_INFO=/ QUERY_STRING='' sh handler.sh </dev/null)
check "greets the world without a name" "Hello, World!" "$out"

out=$(printf hi | REQUEST_METHOD=POST PATH_INFO=/ CONTENT_TYPE=text/plain CONTENT_LENGTH=2 sh handler.sh)
check "echoes a POST" "Content-Type: text/plain

hi" "$out"

[ "$failures" -eq 0 ] || { echo "$failures test(s) failed"; exit 1; }
