#!/usr/bin/env bash
# Every test of the project: formatting, lints (warnings denied), the docs
# (broken links denied), the workspace's tests and doc tests, the fuzz
# invariants over the seed corpus, and the Python package's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each stage says the free disk where target/ lives, so that a CI log shows
# where the disk went if a stage runs out of it.
stage() { echo "== $(date -u +%T) $1 (free disk: $(df -h --output=avail . | tail -1 | tr -d ' '))"; }

stage "format, lints, docs"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
stage "the workspace's tests"
# Each test binary runs through scripts/test-runner.sh, which collects what
# its VM tests left in the shared test home (see there).
host=$(rustc -vV | sed -n 's/^host: //p')
runner_var="CARGO_TARGET_$(echo "$host" | tr 'a-z-' 'A-Z_')_RUNNER"
env "$runner_var=$PWD/scripts/test-runner.sh" cargo test --workspace --locked --no-run
# Beside the workspace's tests, once they are built: the fuzz invariants
# (the fuzz crate, a workspace of its own sharing target/, so the
# dependencies both have are built once) and the HTTP API under
# schemathesis (PyPI, against its OpenAPI document; a server with no VM).
# The VM tests leave the CPU idle for minutes while guests sleep and
# clocks run out; their output is shown after the workspace's.
side_log=$(mktemp)
(
    stage "fuzz invariants (beside the workspace's tests)"
    (cd fuzz && cargo fmt -- --check && CARGO_TARGET_DIR=../target cargo test --locked)
    stage "the HTTP API under schemathesis (beside the workspace's tests)"
    scripts/api-fuzz.sh
) >"$side_log" 2>&1 &
side=$!
trap 'kill "$side" 2>/dev/null || true' EXIT
env "$runner_var=$PWD/scripts/test-runner.sh" cargo test --workspace --locked
side_status=0
wait "$side" || side_status=$?
trap - EXIT
cat "$side_log"
rm -f "$side_log"
if [ "$side_status" -ne 0 ]; then
    echo "test.sh: the fuzz invariants or schemathesis failed (above)" >&2
    exit "$side_status"
fi
# The Python package, installed with pip into a fresh virtual environment.
stage "the Python package"
orgo-py/scripts/test.sh
stage "done"
