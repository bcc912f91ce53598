"""Processes that die with their parent, even when the parent is killed with SIGKILL and cleans nothing up.

Linux's `prctl(PR_SET_PDEATHSIG, SIGKILL)` has the kernel kill a process when the thread that forked it
exits. It is set in the child, between fork and exec for the servers `repobuild run` starts (it survives
exec), and at start for each Celery pool process, so a `run` killed with -9 leaves no redis-server, worker
or pool process behind. A watchdog thread or process polling the parent's pid would do the same but later,
and only while it is itself alive; the kernel's signal needs nothing of ours to be running.

The signal is cleared by fork, so each generation sets it for itself. Elsewhere than Linux this is a no-op.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _prctl() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    fn: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
    return fn


def die_with_parent(parent: int | None = None) -> None:
    """Have the kernel SIGKILL this process when its parent dies; exit now if `parent` (or the parent we had when
    called) is already gone, since the signal is only sent for a death that happens after it was set."""
    prctl = _prctl()
    if prctl is None:
        return
    expected = os.getppid() if parent is None else parent
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != expected:
        os._exit(1)


def preexec_dying_with_us() -> Callable[[], None] | None:
    """A `preexec_fn` for Popen: the child dies with this process. Everything it needs (libc's prctl, our pid) is
    looked up before the fork, so the child runs no import and takes no lock between fork and exec."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return preexec
