"""Shared paths: the tests read the repository's fixtures and examples in place."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "orgo-template" / "tests" / "fixtures"
SNAPSHOTS = REPO / "orgo-template" / "tests" / "snapshots"
GOLDEN = REPO / "orgo-template" / "tests" / "golden"
EXAMPLES = REPO / "examples"
BENCH_DATA = REPO / "benches" / "data"

TEMPLATE_SUFFIXES = {".yaml", ".yml", ".json"}


def templates_in(directory: Path):
    """The template files of a directory, sorted by name."""
    paths = sorted(p for p in directory.iterdir() if p.suffix in TEMPLATE_SUFFIXES)
    assert paths, f"no templates in {directory}"
    return paths


@pytest.fixture
def repo() -> Path:
    return REPO
