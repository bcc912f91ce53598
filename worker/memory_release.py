"""Hand the memory a finished task freed back to the system, so a pool child does not carry one stage's peak
into the next stage it runs.

Python frees a stage's objects (a corpus's posts, the encoded pairs file) into glibc's heap, which keeps the
pages; `malloc_trim(0)` returns the free ones. It takes a few milliseconds, once per task, in the pool child.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from typing import Any

from celery.signals import task_postrun

_libc_name = ctypes.util.find_library("c")
# musl or another libc without malloc_trim: nothing to trim with, and nothing is lost but the saving
_trim = getattr(ctypes.CDLL(_libc_name), "malloc_trim", None) if _libc_name else None


def release_memory(**_signal: Any) -> None:
    gc.collect()
    if _trim is not None:
        _trim(0)


def connect() -> None:
    """Once per process; the dispatch uid makes a second call (another app in the same process) a no-op."""
    task_postrun.connect(release_memory, weak=False, dispatch_uid="repobuild-release-memory")
