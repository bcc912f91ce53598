"""What a chaos test saw, per kind of fault: counts, not logs.

Every chaos test records one `FaultRecord` per fault kind it injected through the `chaos` fixture; at the end
of the session the records are summed per kind, printed as one table, and (under `make chaos`) written as
JSON under `benchmarks/results/`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SEED = int(os.environ.get("CHAOS_SEED", "20261201"))
SCALE = os.environ.get("CHAOS_SCALE", "ci")


@dataclass
class FaultRecord:
    kind: str
    injected: int = 0
    jobs_submitted: int = 0
    jobs_completed: int = 0
    duplicate_rows: int = 0
    duplicate_objects: int = 0
    duplicate_deliveries: int = 0
    # items recomputed after each fault (read from checkpoints and counters), one entry per fault
    recomputed: list[int] = field(default_factory=list)
    # seconds from the fault to the job's next progress, one entry per fault
    resume_s: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def merge(self, other: FaultRecord) -> None:
        for name in ("injected", "jobs_submitted", "jobs_completed", "duplicate_rows", "duplicate_objects",
                     "duplicate_deliveries"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.recomputed += other.recomputed
        self.resume_s += other.resume_s
        self.notes += other.notes


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); enough for a few hundred samples."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary(records: list[FaultRecord]) -> list[dict[str, Any]]:
    by_kind: dict[str, FaultRecord] = {}
    for r in records:
        by_kind.setdefault(r.kind, FaultRecord(r.kind)).merge(r)
    rows = []
    for kind in sorted(by_kind):
        r = by_kind[kind]
        row: dict[str, Any] = asdict(r)
        row["recomputed_max"] = max(r.recomputed) if r.recomputed else None
        row["resume_median_s"] = round(statistics.median(r.resume_s), 2) if r.resume_s else None
        row["resume_p95_s"] = round(percentile(r.resume_s, 95), 2) if r.resume_s else None
        row["resume_max_s"] = round(max(r.resume_s), 2) if r.resume_s else None
        rows.append(row)
    return rows


COLUMNS = (("kind", "fault"), ("injected", "injected"), ("jobs_completed", "jobs ok"),
           ("jobs_submitted", "jobs"), ("duplicate_rows", "dup rows"), ("duplicate_objects", "dup objects"),
           ("duplicate_deliveries", "dup runs"), ("recomputed_max", "redone max"),
           ("resume_median_s", "resume med s"), ("resume_p95_s", "p95 s"), ("resume_max_s", "max s"))


def table(rows: list[dict[str, Any]]) -> str:
    cells = [[h for _, h in COLUMNS]] + [["-" if row[k] is None else str(row[k]) for k, _ in COLUMNS] for row in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(COLUMNS))) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "faults": rows}, indent=2, sort_keys=True) + "\n")


# This process's records: a test's `chaos.record()` appends here; under pytest-xdist each worker hands its own to
# the controller at the session's end (tests/conftest.py), which prints the one table.
RECORDS: list[FaultRecord] = []


def print_summary(terminalreporter: Any) -> None:
    if not RECORDS:
        return
    rows = summary(RECORDS)
    terminalreporter.write_sep("=", f"chaos: seed {SEED}, scale {SCALE}")
    terminalreporter.write_line(table(rows))
    for row in rows:  # what the counts cannot say: measured times, which stage each fault hit
        for note in row["notes"]:
            terminalreporter.write_line(f"  {row['kind']}: {note}")
    target = os.environ.get("CHAOS_RESULTS")
    if target:
        meta = {"seed": SEED, "scale": SCALE, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
        write_json(Path(target), rows, meta)
        terminalreporter.write_line(f"written to {target}")
