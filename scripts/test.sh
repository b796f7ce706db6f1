#!/usr/bin/env bash
# Every test of the project: formatting, lints (warnings denied), the docs
# (broken links denied), the workspace's tests and doc tests, the fuzz
# invariants over the seed corpus, and the Python package's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each stage says the free disk where target/ lives, so that a CI log shows
# where the disk went if a stage runs out of it.
stage() { echo "== $1 (free disk: $(df -h --output=avail . | tail -1 | tr -d ' '))"; }

stage "format, lints, docs"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
stage "the workspace's tests"
cargo test --workspace --locked
stage "fuzz invariants"
(cd fuzz && cargo fmt -- --check && cargo test --locked)
# The HTTP API under schemathesis (PyPI), against its OpenAPI document.
stage "the HTTP API under schemathesis"
scripts/api-fuzz.sh
# The Python package, installed with pip into a fresh virtual environment.
stage "the Python package"
orgo-py/scripts/test.sh
stage "done"
