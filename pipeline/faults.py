"""Fault injection for the chaos tests, off by default: `REPOBUILD_FAULT_KILL_ITEM` unset.

The fault the chaos tier reproduces with it is an input that kills its process every time it is reached:
the kernel's OOM killer on a file that blows up in memory, a native decoder that aborts. Such an input
cannot be made to kill reliably on a shared CI machine: without cgroups the OOM killer picks its own
victim, and an RLIMIT_AS only turns the allocation into a MemoryError, an ordinary exception that the
task reports like any other. So the input is real and reached on the real path (a stage names the item
it works on through `StageContext.working_on`), and only the death is injected, as the kernel would
deliver it: SIGKILL, no Python cleanup, no acknowledgement. Everything after is the real worker's handling.
"""

from __future__ import annotations

import fnmatch
import os
import signal

from pipeline.settings import Settings


def kill_if_poisoned(settings: Settings, item: str) -> None:
    """SIGKILL this process when `item` matches the settings' `fault_kill_item` glob."""
    pattern = settings.fault_kill_item
    if pattern and fnmatch.fnmatchcase(item, pattern):
        os.kill(os.getpid(), signal.SIGKILL)
