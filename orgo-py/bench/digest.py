"""Time `orgo.Template.from_yaml(text).digest` per call from Python against
the same call in Rust (`Template::from_yaml(text)?.digest()`).

Rounds alternate: the Rust timer (`benches/benches/per_call.rs`, built with
`cargo bench --no-run`) runs for a while, then the Python loop on the same
inputs, so both see the same load on a shared machine. Each side's figure
is the median time per call over batches of about 2 ms; the ratio reported
is the median of the per-round ratios.

    python orgo-py/bench/digest.py [--rounds N] [--millis N]

Needs `orgo` installed (`pip install ./orgo-py`) and cargo.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orgo

REPO = Path(__file__).resolve().parents[2]
INPUTS = {
    "reference_canonical": REPO / "benches" / "data" / "reference-canonical.yaml",
    "reference_apps": REPO / "benches" / "data" / "reference-apps.yaml",
    "workstation_5k": REPO / "benches" / "data" / "workstation.yaml",
}


def rust_timer() -> str:
    """Builds the Rust timer and returns its path."""
    out = subprocess.run(
        ["cargo", "bench", "-p", "orgo-benches", "--bench", "per_call", "--no-run",
         "--message-format=json"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout
    for line in out.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "per_call":
            if message.get("executable"):
                return message["executable"]
    sys.exit("no per_call bench executable found")


def rust_nanos(timer: str, millis: int) -> dict:
    out = subprocess.run(
        [timer, "--millis", str(millis), *map(str, INPUTS.values())],
        check=True, capture_output=True, text=True,
    ).stdout
    by_path = dict(line.rsplit(" ", 1) for line in out.splitlines())
    return {name: float(by_path[str(path)]) for name, path in INPUTS.items()}


def python_nanos(text: str, millis: int) -> float:
    """Median ns per call of `Template.from_yaml(text).digest`, batches of ~2 ms."""
    from_yaml = orgo.Template.from_yaml
    for _ in range(20):
        from_yaml(text).digest
    start = time.perf_counter_ns()
    for _ in range(20):
        from_yaml(text).digest
    one = (time.perf_counter_ns() - start) / 20
    batch = max(1, min(100_000, int(2_000_000 / max(one, 1))))
    samples = []
    deadline = time.perf_counter_ns() + millis * 1_000_000
    while time.perf_counter_ns() < deadline or len(samples) < 5:
        t = time.perf_counter_ns()
        for _ in range(batch):
            from_yaml(text).digest
        samples.append((time.perf_counter_ns() - t) / batch)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--millis", type=int, default=200, help="per input, per side, per round")
    args = parser.parse_args()

    texts = {name: path.read_text(encoding="utf-8") for name, path in INPUTS.items()}
    for name, text in texts.items():
        assert orgo.Template.from_yaml(text).digest.startswith("sha256:"), name
    timer = rust_timer()

    rust = {name: [] for name in INPUTS}
    python = {name: [] for name in INPUTS}
    ratios = {name: [] for name in INPUTS}
    for _ in range(args.rounds):
        round_rust = rust_nanos(timer, args.millis)
        for name, text in texts.items():
            py = python_nanos(text, args.millis)
            rust[name].append(round_rust[name])
            python[name].append(py)
            ratios[name].append(py / round_rust[name])

    print(f"orgo {orgo.__version__}, Python {sys.version.split()[0]}, {args.rounds} rounds")
    print(f"{'input':<20} {'bytes':>6} {'rust':>10} {'python':>10} {'ratio':>7} {'ratio range':>15}")
    for name, text in texts.items():
        r = sorted(ratios[name])
        print(
            f"{name:<20} {len(text.encode()):>6} "
            f"{statistics.median(rust[name]) / 1000:>8.1f}us "
            f"{statistics.median(python[name]) / 1000:>8.1f}us "
            f"{statistics.median(r):>6.2f}x "
            f"{r[0]:>6.2f}-{r[-1]:.2f}x"
        )


if __name__ == "__main__":
    main()
