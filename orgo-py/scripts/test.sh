#!/usr/bin/env bash
# The Python package's tests, as a user gets the package: a fresh virtual
# environment, `pip install ./orgo-py` (maturin, from PyPI, builds the
# extension in release mode), then pytest over orgo-py/tests and mypy's
# stubtest of the type stubs against the installed module.
#
# tests/test_runtime.py builds and launches computers under QEMU (root, QEMU;
# for a first base image mmdebstrap and Debian's mirror). It finds the
# repository from its own path and reads, from the environment passed on
# here: ORGO_TEST_HOME (default target/orgo-test-home), ORGO_AGENT (default:
# the agent built into the extension) and ORGO_ACCEL (default tcg).
# tests/test_remote.py starts the workspace's `orgo serve` (ORGO_BIN, default
# target/debug/orgo, built here) on 127.0.0.1 over that home.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"

python="${PYTHON:-python3}"
if [ -z "${ORGO_BIN:-}" ]; then
    cargo build --quiet --locked -p orgo --bin orgo
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

"$python" -m venv "$scratch/venv"
venv_python="$scratch/venv/bin/python"
"$venv_python" -m pip install --quiet --disable-pip-version-check ./orgo-py "pytest>=7" "mypy==2.4.1"

# Run from outside the source tree, so `import orgo` is the installed package.
cd "$scratch"
"$venv_python" -m mypy.stubtest orgo --allowlist "$root/orgo-py/tests/stubtest-allowlist.txt"
"$venv_python" -m pytest -q -p no:cacheprovider "$root/orgo-py/tests"
