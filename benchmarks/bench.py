"""`make bench`: every target of issue 12 measured on the real system in one go, one table and bench.json.

Each target is a module of its own that can also run alone (`python -m benchmarks.pN_...`); this runs them in turn,
each on its own private Redis, workers and API (or gunicorn), stopped before the next starts, and prints one table:

    P1, P2  benchmarks/p1_process_all.py, p2_rebuild.py   process-all vs the embedding floor; one-post rebuilds
    P3      benchmarks/p3_resume.py                        kill -9 of the whole worker during embed_text
    P4      benchmarks/p4_io_bound.py                      I/O-bound embedding, 4 worker processes vs 1
    P5      benchmarks/p5_submit_load.py                   POST /jobs at 500/s for 30 s through gunicorn
    P6      benchmarks/p6_memory.py                        peak RSS per worker process, small vs the largest run
    P7      benchmarks/p7_parse.py                         parse stage ms per post
    P8      benchmarks/p8_images.py                        image variants s per image, 2 processes

Every figure is a ratio to its target taken in the same run. Timings on a shared machine are noisy: nothing is
asserted; the load average before and after each measure is in the JSON. A measure that fails is a row that
says why, and the others still run. The JSON is rewritten after every measure, so an interrupted run keeps what
it measured.

    python -m benchmarks.bench [--only P1,P5] [--out benchmarks/results/bench.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.targets import Row, table

RESULTS = Path(__file__).resolve().parent / "results" / "bench.json"


def _p1_p2() -> list[Row]:
    from benchmarks import p1_process_all, p2_rebuild

    return p1_process_all.with_builds(lambda b: [p1_process_all.measure(b), p2_rebuild.measure(b)])


def _p3() -> list[Row]:
    from benchmarks import p3_resume

    return [p3_resume.measure()]


def _p4() -> list[Row]:
    from benchmarks import p4_io_bound

    return [p4_io_bound.measure()]


def _p5() -> list[Row]:
    from benchmarks import p5_submit_load

    return [p5_submit_load.measure()]


# The whole opensource-guide in every language (2.9 M tokens to embed) alone takes ~25 min here, so `make bench`
# runs P6 on small and til; `make bench-memory` (or P6_CORPORA=small,til,guide-all) runs the largest too, and
# `--p6-from` reads a result that run wrote instead of measuring again.
P6_CORPORA = os.environ.get("P6_CORPORA", "small,til")
P6_FROM: Path | None = None


def _p6() -> list[Row]:
    from benchmarks import p6_memory

    return [p6_memory.measure(P6_CORPORA, source=P6_FROM)]


def _p7() -> list[Row]:
    from benchmarks import p7_parse

    # the median of three runs a corpus: one run on this shared machine varies by a third from the next
    return [p7_parse.measure(repeat=3)]


def _p8() -> list[Row]:
    from benchmarks import p8_images

    return [p8_images.measure()]


# (ids a measure gives, the measure): the quick ones first, so that an interrupted run still has them
MEASURES: list[tuple[tuple[str, ...], Callable[[], list[Row]]]] = [
    (("P5",), _p5), (("P7",), _p7), (("P8",), _p8), (("P3",), _p3), (("P4",), _p4), (("P1", "P2"), _p1_p2),
    (("P6",), _p6),
]


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _earlier(out: Path, only: set[str] | None) -> tuple[list[Row], list[dict[str, Any]]]:
    """With --only, the rows and measures of the earlier run in `out` that this run does not measure again."""
    if not only or not out.exists():
        return [], []
    earlier = json.loads(out.read_text())
    rows = [Row(**r) for r in earlier.get("targets", []) if r["id"] not in only]
    return rows, [m for m in earlier.get("measures", []) if not only & set(m["ids"])]


def run(only: set[str] | None, out: Path) -> list[Row]:
    found, runs = _earlier(out, only)
    started = time.time()
    for ids, fn in MEASURES:
        if only and not only & set(ids):
            continue
        print(f"\n=== {', '.join(ids)} ===", flush=True)
        load0, t0 = _load(), time.monotonic()
        try:
            rows = fn()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one measure failing must not lose the others: its row says why
            traceback.print_exc()
            rows = [Row(i, "(see the log)", "(issue 12)", f"error: {type(exc).__name__}: {exc}"[:300]) for i in ids]
        spent = time.monotonic() - t0
        found += rows
        runs.append({"ids": list(ids), "seconds": round(spent, 1), "load_before": load0, "load_after": _load()})
        print(table(rows), flush=True)
        _write(out, found, runs, started)
    return found


def _write(out: Path, found: list[Row], runs: list[dict[str, Any]], started: float) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    found = sorted(found, key=lambda r: r.id)
    out.write_text(json.dumps({"started_at": started, "seconds": round(time.time() - started, 1),
                               "cpus": os.cpu_count(), "measures": runs,
                               "targets": [r.to_json() for r in found]}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated target ids, e.g. P1,P5 (default: all); the other rows of --out "
                                   "are kept from its earlier run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--p6-from", type=Path, help="a benchmarks.memory result to take P6 from instead of a run")
    args = ap.parse_args(argv)
    global P6_FROM
    P6_FROM = args.p6_from
    only = {s.strip().upper() for s in args.only.split(",")} if args.only else None
    t0 = time.monotonic()
    found = run(only, args.out)
    print(f"\n{table(sorted(found, key=lambda r: r.id))}\n\n{time.monotonic() - t0:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
