#!/usr/bin/env bash
# schemathesis (PyPI), a fuzzer this project did not write, against the
# HTTP API's own description (`GET /api/openapi.json`): every operation,
# with a valid key; no answer may be a 5xx, and every answer must match the
# document (status codes, content types, headers, bodies), and invalid
# requests must be refused.
#
# The server runs over an empty orgo home with no build and no launch
# allowed (`--max-builds 0 --max-computers 0`: those routes answer 429,
# as documented), so the fuzzer never starts a VM. Not checked:
# `positive_data_acceptance`, because what makes a request valid is
# more than its JSON Schema says (a template body must be a valid
# `orgo.ai/v1` document, a version's numbers must fit 64 bits, an
# environment name must be a shell variable name): those are refused with
# a documented 4xx.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=$PWD/target/schemathesis-venv
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==4.32.5"
fi
cargo build --quiet --locked -p orgo
home=$(mktemp -d)
addr_file=$home.addr
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$home" "$addr_file"
}
trap cleanup EXIT
key=$(target/debug/orgo --store "$home" keys create --namespace fuzz 2>/dev/null)
target/debug/orgo --store "$home" serve --listen 127.0.0.1:0 --max-builds 0 --max-computers 0 \
    >"$addr_file" 2>"$home.log" &
server_pid=$!
for _ in $(seq 100); do [ -s "$addr_file" ] && break; sleep 0.1; done
addr=$(head -1 "$addr_file")
[ -n "$addr" ] || { echo "orgo serve did not start" >&2; cat "$home.log" >&2; exit 1; }
# From the temporary directory: schemathesis keeps its cache in the
# working directory.
(cd "$home" && "$venv/bin/schemathesis" run "http://$addr/api/openapi.json" \
    --header "Authorization: Bearer $key" \
    --checks all --exclude-checks positive_data_acceptance \
    --max-examples 30 --workers 1 --no-color)
