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
env "$runner_var=$PWD/scripts/test-runner.sh" cargo test --workspace --locked
stage "fuzz invariants"
# The fuzz crate is a workspace of its own; it shares target/, so the
# dependencies both have are built once.
(cd fuzz && cargo fmt -- --check && CARGO_TARGET_DIR=../target cargo test --locked)
# The HTTP API under schemathesis (PyPI), against its OpenAPI document.
stage "the HTTP API under schemathesis"
scripts/api-fuzz.sh
# The Python package, installed with pip into a fresh virtual environment.
stage "the Python package"
orgo-py/scripts/test.sh
stage "done"
