#!/usr/bin/env bash
# The main job, from a fresh clone: install what orgo needs (Debian/Ubuntu,
# as root), build orgo (the static guest agent is built into it), build the golden
# snapshot of examples/hello.yaml, launch a computer from it, run commands
# in it, list it, stop it.
#
# The first run builds the Debian base image (a few minutes); later builds
# of the same template are cache hits, and launches take a fraction of a
# second. State lives in $ORGO_HOME (default ~/.local/share/orgo).
set -euo pipefail
cd "$(dirname "$0")/.."

# QEMU (the emulator and qemu-img at one version), mmdebstrap, mkfs.ext4,
# busybox-static, fresh package lists.
scripts/install-deps.sh

echo "== building orgo (with the static guest agent built in)" >&2
cargo build -q --release --locked -p orgo
orgo=${CARGO_TARGET_DIR:-target}/release/orgo

echo "== orgo build --check examples/hello.yaml" >&2
$orgo build --check examples/hello.yaml
echo "== orgo build examples/hello.yaml" >&2
$orgo build examples/hello.yaml
echo "== orgo launch examples/hello.yaml" >&2
id=$($orgo launch examples/hello.yaml)
# Stopped also if a command below fails.
trap '$orgo stop "$id" >/dev/null 2>&1 || true' EXIT
echo "== orgo exec $id -- ..." >&2
$orgo exec "$id" -- cat /opt/hello.txt /opt/first-boot.txt
$orgo exec "$id" -- jq --version
$orgo exec "$id" -- sh -c 'echo "machine-id $(cat /etc/machine-id), hostname $(hostname)"'
echo "== orgo ps" >&2
$orgo ps
echo "== orgo stop $id" >&2
$orgo stop "$id"
trap - EXIT
