"""Time one `exec` round trip from Python: a local `orgo.Computer` against
an `orgo.RemoteComputer` of an `orgo serve` on 127.0.0.1, both launched
from the same snapshot (QEMU serves one host connection to a computer's
agent at a time, so each side has its own computer), with and without an
`on_stdout` callback.

Rounds alternate between the sides, so both see the same load on a shared
machine; each figure is the median over every call of its side.

    python orgo-py/bench/exec.py [--rounds N] [--calls N]

Needs `orgo` installed (`pip install ./orgo-py`), root and QEMU, the
`orgo` binary (`$ORGO_BIN`, else `target/debug/orgo`: a debug server; a
release one, `cargo build --release -p orgo`, is what a deployment runs)
and the test home (`$ORGO_TEST_HOME`, else `target/orgo-test-home`).
"""

import argparse
import os
import pathlib
import statistics
import subprocess
import time

import orgo

REPO = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = 'api_version: orgo.ai/v1\nname: restart-base@1.0.0\nbuild:\n  run: ["echo base > /opt/base.txt"]\n'


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()

    home = pathlib.Path(os.environ.get("ORGO_TEST_HOME") or REPO / "target" / "orgo-test-home")
    binary = os.environ.get("ORGO_BIN") or str(REPO / "target" / "debug" / "orgo")
    os.environ.setdefault("ORGO_ACCEL", "tcg")
    env = dict(os.environ, ORGO_HOME=str(home))
    key = subprocess.run([binary, "keys", "create", "--namespace", "pybench"], env=env,
                         check=True, capture_output=True, text=True).stdout.strip()
    server = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0"], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        url = "http://" + server.stdout.readline().strip()
        template = orgo.Template.from_yaml(TEMPLATE)
        client = orgo.Client(url, key)
        with orgo.launch(template, home=home) as local, client.launch(template) as remote:
            sides = {"local": local, "remote": remote}
            times = {(side, cb): [] for side in sides for cb in (False, True)}
            for c in sides.values():  # warm up
                c.exec(["true"])
            for _ in range(args.rounds):
                for (side, cb), samples in times.items():
                    c = sides[side]
                    for _ in range(args.calls):
                        start = time.perf_counter()
                        if cb:
                            c.exec(["echo", "x"], on_stdout=lambda _: None)
                        else:
                            c.exec(["true"])
                        samples.append(time.perf_counter() - start)
        for (side, cb), samples in times.items():
            what = "echo x, on_stdout" if cb else "true"
            print(f"{side:6} {what:18} median {statistics.median(samples) * 1e3:7.2f} ms"
                  f"  (p90 {statistics.quantiles(samples, n=10)[-1] * 1e3:.2f} ms, n={len(samples)})")
        for cb in (False, True):
            delta = statistics.median(times[("remote", cb)]) - statistics.median(times[("local", cb)])
            print(f"remote - local ({'on_stdout' if cb else 'plain'}): {delta * 1e3:+.2f} ms")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
