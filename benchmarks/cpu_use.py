"""CPU seconds of the machine, of the hypervisor's steal and of the benchmark's own processes, from /proc."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Cpu:
    """CPU seconds since boot: the whole machine busy, stolen by the hypervisor, and used by our processes."""

    at: float
    machine: float
    steal: float
    ours: float

    def minus(self, before: Cpu) -> Cpu:
        return Cpu(self.at - before.at, self.machine - before.machine, self.steal - before.steal,
                   self.ours - before.ours)

    def describe(self) -> str:
        others = max(0.0, self.machine - self.ours)
        return (f"CPU during it: ours {self.ours:.1f} s, other processes {others:.1f} s "
                f"({others / max(self.at, 1e-9):.2f} cores on average), steal {self.steal:.1f} s")


def cpu_now(groups: set[int]) -> Cpu:
    """Machine-wide busy and steal time from /proc/stat; ours = this process + the process groups in `groups`
    (the workers with their pool children, redis), from /proc/<pid>/stat. Zeros where /proc is missing."""
    machine = steal = ours = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        machine = (v[0] + v[1] + v[2] + v[5] + v[6]) / HZ  # user nice system irq softirq
        steal = v[7] / HZ
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = stat.read_text()
            f = raw[raw.rindex(")") + 2:].split()  # fields after the command name, from field 3 (state)
            pid, pgid = int(stat.parent.name), int(f[2])
            if pid == me or pgid in groups:
                ours += (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / HZ  # utime stime cutime cstime
    return Cpu(time.time(), machine, steal, ours)
