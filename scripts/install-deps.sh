#!/usr/bin/env bash
# Installs, as one consistent set, the Debian packages the runtime and its
# tests need (Debian or Ubuntu, as root). Safe to run again: what is
# installed already stays.
#
# - qemu-system-x86 and qemu-utils (qemu-img) at one version: the candidate
#   of qemu-system-x86. A newer qemu-utils (from backports, say) conflicts
#   with the older emulator, and apt would rather remove it than pick a
#   version for us, so both are named with that version (a downgrade of
#   qemu-utils when needed).
# - mmdebstrap, e2fsprogs (mkfs.ext4): the base image's root file system.
# - busybox-static: the initramfs takes busybox from `apt-get download
#   busybox-static`, which needs the package lists this script updates.
# - ca-certificates; python3-venv when Python has no venv with ensurepip
#   (the Python package's tests make a virtual environment).
# - iproute2 (ip, tc), nftables, util-linux (nsenter, setpriv): each VM's
#   network namespace, firewall and rate limit, and the rootless test;
#   curl, python3 and openssl: the test hosts and probes of the egress
#   tests (HTTP and HTTPS with a self-signed certificate).
# - postgresql: the fleet's registry in its tests (not started here: each
#   test starts a server of its own).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: run as root (apt-get installs packages)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q

qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
if [ -z "$qemu_version" ] || [ "$qemu_version" = "(none)" ]; then
    echo "install-deps.sh: apt knows no candidate version of qemu-system-x86" >&2
    exit 1
fi

packages=(
    "qemu-system-x86=$qemu_version"
    "qemu-utils=$qemu_version"
    mmdebstrap
    busybox-static
    e2fsprogs
    ca-certificates
    iproute2
    nftables
    curl
    util-linux
    python3
    openssl
    # The desktop's tests: an X server and xev for the agent's actions on
    # the host; ffmpeg (an RTMP receiver, ffprobe) for streaming.
    xvfb
    x11-utils
    ffmpeg
    # The fleet's tests: a PostgreSQL server for the shared registry
    # (orgo-fleet-testing starts its own, in a temporary directory).
    postgresql
)
if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
    packages+=(python3-venv)
fi

apt-get install -y -q --no-install-recommends --allow-downgrades "${packages[@]}"
