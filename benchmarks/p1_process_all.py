"""P1: process-all wall time on opensource-guide English + til, versus the bare embedding floor on the same inputs.

    python -m benchmarks.p1_process_all [--concurrency N] [--keep]

One run of benchmarks.builds (a full build, two one-post rebuilds, the floor; ~7 min here) gives both P1 and P2;
this prints both rows and P1's details. Target: wall ≤ 1.15 × floor + 5 s; the ratio is wall / that limit.
The floor runs the build's own embedding inputs in as many processes and threads as the worker had (see
benchmarks/pool_floor.py), so both sides have the same cores.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TypeVar

from benchmarks.builds import Builds, run_builds, stage_times
from benchmarks.harness import discard
from benchmarks.targets import Row, table
from pipeline.settings import Settings

FACTOR, FIXED_S = 1.15, 5.0
T = TypeVar("T")


def measure(builds: Builds | None = None) -> Row:
    """P1's row, from `builds` (or from a run of its own)."""
    b = builds or with_builds(lambda found: found)
    limit = FACTOR * b.floor.seconds + FIXED_S
    ratio = b.full.wall_s / limit
    return Row("P1", f"process-all wall, opensource-guide English + til ({b.posts} posts, {b.images} images), "
                     f"vs the embedding floor ({b.floor.processes} proc × {b.floor.threads} thread)",
               "≤ 1.15 × floor + 5 s",
               f"{b.full.wall_s:.1f} s vs floor {b.floor.seconds:.1f} s (limit {limit:.1f} s)", ratio, ratio <= 1.0,
               details=b.to_json())


def with_builds(use: Callable[[Builds], T], concurrency: int = 2, keep: bool = False) -> T:
    """Run benchmarks.builds in a temporary folder (removed afterwards unless `keep`) and hand the result to `use`."""
    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # so the harness's clean-up runs and stops every process

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    root = Path(tempfile.mkdtemp(prefix="repobuild-p1-"))
    try:
        return use(run_builds(root, Settings.from_env().with_(redis_url=None), concurrency))
    finally:
        discard(root, keep)


def details(b: Builds) -> str:
    lines = [f"full build {b.full.wall_s:.1f} s; per stage (wall, gap before it, time in its own tasks):"]
    lines += [f"  {name:<13} {t['wall_s']:7.2f} s   gap {t['gap_s']:5.2f} s   task {t['task_s']:6.2f} s"
              for name, t in stage_times(b.full).items()]
    for name, p in b.phases.items():
        lines.append(f"  {name}: plan {p['plan']:.2f} s, batches {p['batches']:.2f} s, assemble {p['assemble']:.2f} s")
    for phase, shares in b.busy.items():
        lines.append(f"  busy during {phase}: " + ", ".join(f"pid {pid} {v:.0%}" for pid, v in sorted(shares.items())))
    f = b.floor
    lines.append(f"floor {f.seconds:.1f} s: {f.texts} texts + {f.images} images, {f.processes} processes × "
                 f"{f.threads} thread(s); {f.tokens} tokens ({f.padded} padded); CPU per process "
                 + ", ".join(f"{s:.1f} s" for s in f.busy_s) + f"; max |Δ| to the pipeline's vectors {b.diff:.1e}")
    lines.append("load average: " + "; ".join(f"{k} {v}" for k, v in b.load.items())
                 + f"; the whole run took {b.cost_s:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmarks import p2_rebuild

    ap = argparse.ArgumentParser(prog="python -m benchmarks.p1_process_all", description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=2, help="worker pool processes (and floor processes)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (worker logs, artifacts)")
    ap.add_argument("--json", type=Path, help="also write both rows here")
    args = ap.parse_args(argv)

    def report(b: Builds) -> list[Row]:
        found = [measure(b), p2_rebuild.measure(b)]
        print(table(found) + "\n\n" + details(b) + "\n\n" + p2_rebuild.details(b))
        return found

    found = with_builds(report, args.concurrency, args.keep)
    if args.json:
        args.json.write_text(json.dumps([r.to_json() for r in found], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
