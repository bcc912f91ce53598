"""The chaos tier: faults injected into real processes at seeded random moments.

`CHAOS_SCALE=ci` (the default, part of `make test`) runs a few faults of each kind; `make chaos` sets
`CHAOS_SCALE=full` and `CHAOS_RESULTS` (a JSON path). `CHAOS_SEED` replays a run: every random choice of
a test comes from `chaos.rng`, seeded from the seed and the test's name.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.report import RECORDS, SCALE, SEED, FaultRecord

if SCALE not in ("ci", "full"):
    raise pytest.UsageError(f"CHAOS_SCALE must be 'ci' or 'full', not {SCALE!r}")


class Chaos:
    """One test's view of the run: its random source, its scale, and what it records."""

    def __init__(self, nodeid: str) -> None:
        digest = hashlib.sha256(f"{SEED}:{nodeid}".encode()).digest()
        self.rng = random.Random(int.from_bytes(digest[:8], "big"))
        self.full = SCALE == "full"
        self.seed = SEED

    def n(self, ci: int, full: int) -> int:
        """How many of something this scale injects."""
        return full if self.full else ci

    def record(self, kind: str) -> FaultRecord:
        """A record for `kind`, kept for the session's table; fill it in as faults are injected and checked."""
        rec = FaultRecord(kind)
        RECORDS.append(rec)
        return rec


@pytest.fixture
def chaos(request: pytest.FixtureRequest) -> Iterator[Chaos]:
    yield Chaos(request.node.nodeid)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.chaos)
