"""`make bench`: the targets of issue 12 side by side, measured on real runs, one table and bench.json.

One run of `benchmarks.memory` (a fresh worker per corpus, jobs over the HTTP API, embeddings on) over the small
opensource-guide subset, all of its English posts and til gives:
- P6 the peak RSS of any worker process on the largest run (target ≤ 400 MiB, and flat: largest / small run);
- P7 the parse stage's own time (its elapsed seconds in the job state) per post, on til and on opensource-guide;
- P8 the image variants the bundle lists per source image.
The other targets are listed as not measured yet. Timings on a shared machine are noisy: nothing is asserted.

    python -m benchmarks.bench [--corpora small,guide,til] [--from benchmarks/results/memory.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks import memory
from benchmarks.targets import Row, table

RESULTS = Path(__file__).resolve().parent / "results" / "bench.json"
P6_LIMIT_MIB = 400.0


def rows(result: dict[str, Any]) -> list[Row]:
    runs: list[dict[str, Any]] = result["runs"]
    by_name = {r["corpus"]: r for r in runs}
    out = [Row(f"P{i}", "(issue 12)", "(issue 12)") for i in range(1, 6)]
    peak = float(result["peak_rss_mib"])
    small = float(memory.peak_rss_mib(runs[:1]))
    out.append(Row("P6", f"peak RSS per worker process, {runs[-1]['corpus']} ({runs[-1]['posts']} posts); "
                         f"growth vs {runs[0]['corpus']}", f"≤ {P6_LIMIT_MIB:.0f} MiB, flat",
                   f"{peak:.0f} MiB (×{peak / max(small, 1):.2f} of {small:.0f})", peak / P6_LIMIT_MIB,
                   peak <= P6_LIMIT_MIB))
    parse = [f"{name} {1000 * r['stage_s']['parse'] / max(r['posts'], 1):.1f} ms ({r['posts']} posts)"
             for name, r in by_name.items() if name in ("til", "guide")]
    out.append(Row("P7", "parse stage ms per post", "(issue 12)", "; ".join(parse) or "not measured yet"))
    variants = [f"{name} {r['images']['variants'] / max(r['images']['resized'], 1):.2f} "
                f"({r['images']['variants']} for {r['images']['resized']} images)"
                for name, r in by_name.items() if r.get("images", {}).get("resized")]
    out.append(Row("P8", "image variants per source image", "(issue 12)", "; ".join(variants) or "not measured yet"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", default="small,guide,til")
    ap.add_argument("--from", dest="source", type=Path, help="a memory.json already measured, instead of a run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--keep", action="store_true", help="keep the runs' folder (bundles, worker logs)")
    args = ap.parse_args(argv)
    if args.source is None:
        args.source = memory.RESULTS
        code = memory.main(["--corpora", args.corpora, "--out", str(args.source), *(["--keep"] * args.keep)])
        if code:
            return code
    result = json.loads(args.source.read_text())
    found = rows(result)
    print("\n" + table(found))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"at": time.time(), "memory": str(args.source),
                                    "targets": [r.to_json() for r in found]}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
