"""After a task, the pool child hands the heap pages a stage freed back to the system (glibc's malloc_trim)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker import memory_release


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(memory_release._trim is None, reason="this libc has no malloc_trim")
def test_release_returns_freed_small_objects_to_the_system() -> None:
    memory_release.release_memory(force=True)
    base = _rss_mib()
    # texts of a few KB (post bodies, encoded rows) come from malloc's heap; one still alive above them (the
    # last) keeps glibc from trimming the heap's top itself, so freeing the rest gives nothing back by itself
    held = [f"post {i} " * 300 for i in range(100_000)]
    pin = held[-1:]
    grown = _rss_mib()
    del held
    assert grown - base > 200
    assert _rss_mib() - base > (grown - base) / 2  # freed, yet still resident
    memory_release.release_memory()
    assert _rss_mib() - base < (grown - base) / 4
    assert pin


def test_a_task_that_grew_nothing_skips_the_full_collection() -> None:
    memory_release.release_memory(force=True)
    assert memory_release.release_memory() is False  # nothing grew: no gc.collect() to pay for
    held = [bytearray(1024) for _ in range(int(memory_release.RELEASE_GROWTH_MIB * 1024 * 2))]
    assert memory_release.release_memory() is True
    del held
