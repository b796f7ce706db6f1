#!/usr/bin/env bash
# Cargo's runner for the workspace's test binaries (scripts/test.sh sets it):
# runs one test binary, then `orgo store gc` over the test home.
#
# Every VM test builds, publishes and checkpoints templates with a fresh
# nonce, so what a binary stored is garbage once it has exited; without
# this the test home grows by more than 10 GB over a run (each snapshot
# holds a memory file of up to 1 GB), which filled the CI machine's disk.
# Base images, and anything a running computer uses, stay.
set -uo pipefail

status=0
started=$SECONDS
"$@" || status=$?

root=$(cd "$(dirname "$0")/.." && pwd)
home=$root/target/orgo-test-home
orgo=$root/target/debug/orgo
# Doc tests come through here too (rustdoc's `--test-runtool`, from a
# temporary directory); they build nothing, and only test binaries
# (`target/debug/deps/...`) are followed by a gc.
if [[ $1 == */deps/* && -d $home/blobs && -x $orgo ]]; then
    # What the binary published or checkpointed is garbage too, but a gc
    # root: those refs go first (their directories are the local store's
    # layout, orgo-snapshot's `registry::keys`). Base images and leases stay.
    rm -rf "$home"/refs/templates "$home"/refs/published "$home"/refs/checkpoints
    # gc waits for the builds under way; a test that leaked one must not
    # hang the run, hence the bound. A failing gc is reported, and fails the
    # run only through the store's own tests: the test binary's status is
    # what this script returns.
    if ! out=$(env -u ORGO_URL timeout 600 "$orgo" --store "$home" store gc 2>&1); then
        echo "test-runner: \`orgo store gc\` over $home failed: $out" >&2
    else
        # The time, and what gc freed: the CI log shows where time and
        # disk went.
        echo "test-runner: $(date -u +%T) ${1##*/} took $((SECONDS - started)) s; gc $out" \
            "($(df -h --output=avail "$home" | tail -1 | tr -d ' ') free)" >&2
    fi
fi
exit "$status"
