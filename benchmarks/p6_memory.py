"""P6 of issue 12: peak RSS of every worker process on the largest run, and its growth from the small corpus.

One run of `benchmarks.memory` (the real system: a private Redis, the API, a fresh worker with its prefork pool per
corpus, process-all jobs with embeddings submitted over HTTP) over the small opensource-guide subset, til and the
whole opensource-guide in every language (349 posts, 2.9 M MiniLM tokens: the largest), smallest first.

- measured: the largest RSS any worker process (main or pool child) reached during the largest run; target ≤ 400 MiB.
- flat: that peak over the same figure on the small run, ≤ FLAT (1.10). A pool child that loaded the text model
  carries it (≈ 250 MiB) in every run, so the ratio alone would hide a stage that grows; the details also give,
  per stage, the largest process's peak on each run and its growth, and the stage's own rise (VmHWM growth while
  it ran), which is what a stage that loads a corpus into one process shows first.

    python -m benchmarks.p6_memory [--corpora small,til,guide-all] [--from memory.json] [--keep]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import memory
from benchmarks.targets import Row

LIMIT_MIB = 400.0
FLAT = 1.10  # largest run's peak / small run's peak, per process
CORPORA = "small,til,guide-all"


def _largest(peak: dict[str, Any]) -> float:
    return max(float(peak["main_rss_mib"]), float(peak["child_rss_mib"]))


def row(result: dict[str, Any]) -> Row:
    """The P6 row of one benchmarks.memory result (its runs smallest first)."""
    runs: list[dict[str, Any]] = result["runs"]
    small, large = runs[0], runs[-1]
    peak, base = memory.peak_rss_mib(runs[-1:]), memory.peak_rss_mib(runs[:1])
    growth = peak / max(base, 1.0)
    stages: dict[str, Any] = {}
    for name, pk in large["peaks"].items():
        entry: dict[str, Any] = {r["corpus"]: round(_largest(r["peaks"][name]), 1)
                                 for r in runs if name in r["peaks"]}
        entry["rise_mib"] = {r["corpus"]: r["peaks"][name]["rise_mib"] for r in runs if name in r["peaks"]}
        if name in small["peaks"]:
            entry["growth"] = round(_largest(pk) / max(_largest(small["peaks"][name]), 1.0), 3)
        stages[name] = entry
    passed = peak <= LIMIT_MIB and growth <= FLAT
    return Row("P6", f"peak RSS per worker process, {large['corpus']} ({large['posts']} posts); growth vs "
                     f"{small['corpus']} ({small['posts']} posts)",
               f"≤ {LIMIT_MIB:.0f} MiB, flat (≤ ×{FLAT:.2f})",
               f"{peak:.0f} MiB (×{growth:.2f} of {base:.0f} MiB)", round(peak / LIMIT_MIB, 3), passed,
               {"peak_mib": peak, "small_peak_mib": base, "growth": round(growth, 3), "flat_limit": FLAT,
                "runs": {r["corpus"]: {"posts": r["posts"], "wall_s": r["wall_s"],
                                       "peak_mib": memory.peak_rss_mib([r])} for r in runs},
                "stages": stages})


def measure(corpora: str = CORPORA, source: Path | None = None, keep: bool = False) -> Row:
    """Run benchmarks.memory over `corpora` (or read a result it wrote, `source`) and give the P6 row."""
    if source is None:
        with tempfile.TemporaryDirectory(prefix="repobuild-p6-") as tmp:
            out = Path(tmp) / "memory.json"
            code = memory.main(["--corpora", corpora, "--out", str(out), *(["--keep"] * keep)])
            if code:
                raise RuntimeError(f"benchmarks.memory exited {code}")
            return row(json.loads(out.read_text()))
    return row(json.loads(source.read_text()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", default=CORPORA, help="comma-separated, smallest first")
    ap.add_argument("--from", dest="source", type=Path, help="a benchmarks.memory result, instead of a run")
    ap.add_argument("--keep", action="store_true", help="keep the runs' folder (bundles, worker logs)")
    args = ap.parse_args(argv)
    found = measure(args.corpora, args.source, args.keep)
    print(found.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
