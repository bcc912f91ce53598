"""Hand the memory a finished task freed back to the system, so a pool child does not carry one stage's peak
into the next stage it runs.

Python frees a stage's objects (a corpus's posts, the encoded pairs file) into glibc's heap, which keeps the
pages; `malloc_trim(0)` returns the free ones. The full `gc.collect()` before it is the costly part (~40 ms of
CPU in a child that loaded the text model), which a batch of a remote embedder (~0.15 s) cannot afford after
every task: so both run only after a task that left the process's RSS at least RELEASE_GROWTH_MIB above where
the last release left it. A task that grew nothing has nothing to give back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from typing import Any

from celery.signals import task_postrun

_libc_name = ctypes.util.find_library("c")
# musl or another libc without malloc_trim: nothing to trim with, and nothing is lost but the saving
_trim = getattr(ctypes.CDLL(_libc_name), "malloc_trim", None) if _libc_name else None


RELEASE_GROWTH_MIB = 16.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_after_last_release = 0.0  # RSS in MiB when the last release finished


def rss_mib() -> float:
    """This process's resident set (0.0 where /proc is not there: then every task releases)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def release_memory(force: bool = False, **_signal: Any) -> bool:
    """Collect and trim when the process grew since the last time (or `force`); whether it did."""
    global _after_last_release
    now = rss_mib()
    if not force and now and now - _after_last_release < RELEASE_GROWTH_MIB:
        return False
    gc.collect()
    if _trim is not None:
        _trim(0)
    _after_last_release = rss_mib()
    return True


def connect() -> None:
    """Once per process; the dispatch uid makes a second call (another app in the same process) a no-op."""
    task_postrun.connect(release_memory, weak=False, dispatch_uid="repobuild-release-memory")
