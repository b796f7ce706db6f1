#!/usr/bin/env bash
# Every test of the project: formatting, lints (warnings denied), the docs
# (broken links denied), the workspace's tests and doc tests, the fuzz
# invariants over the seed corpus, and the Python package's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
cargo test --workspace --locked
(cd fuzz && cargo fmt -- --check && cargo test --locked)
# The HTTP API under schemathesis (PyPI), against its OpenAPI document.
scripts/api-fuzz.sh
# The Python package, installed with pip into a fresh virtual environment.
orgo-py/scripts/test.sh
