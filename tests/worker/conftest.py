"""Fixtures of the worker's unit tests; the tier-2 tests beside them use tests/conftest.py's real Redis."""

from __future__ import annotations

import pytest

from pipeline.stores.jobs_memory import MemoryJobStore
from tests.worker.in_memory import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory_store(clock: FakeClock) -> MemoryJobStore:
    """An in-memory job store on a clock the test moves: leases and jobs expire when it says."""
    return MemoryJobStore(clock=clock)
