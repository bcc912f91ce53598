"""Processes read from /proc, by pid and start time (a pid alone can be reused by an unrelated process)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str
    started: int  # clock ticks after boot: with the pid, names one process for good
    argv: tuple[str, ...]

    @property
    def command(self) -> str:
        return " ".join(self.argv)


def read(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name in parentheses may hold spaces
    argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
    return Proc(pid=pid, ppid=int(fields[1]), state=fields[0], started=int(fields[19]), argv=argv)


def all_procs() -> list[Proc]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            p = read(int(name))
            if p is not None:
                found.append(p)
    return found


def descendants(root: int) -> list[Proc]:
    """Every living process below `root` (children in sessions of their own included: they keep their parent)."""
    procs = all_procs()
    below: list[Proc] = []
    parents = {root}
    while True:
        more = [p for p in procs if p.ppid in parents and p not in below]
        if not more:
            return below
        below += more
        parents = {p.pid for p in more}


def running(p: Proc) -> bool:
    """The same process (pid and start time) still exists and is not a zombie."""
    now = read(p.pid)
    return now is not None and now.started == p.started and now.state != "Z"


def wait_gone(procs: list[Proc], timeout: float) -> tuple[float, list[Proc]]:
    """Seconds until none of `procs` runs, and those still running at the timeout."""
    t0 = time.monotonic()
    while True:
        left = [p for p in procs if running(p)]
        elapsed = time.monotonic() - t0
        if not left or elapsed > timeout:
            return elapsed, left
        time.sleep(0.02)
