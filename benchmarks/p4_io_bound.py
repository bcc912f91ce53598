"""P4: one job whose embedding is I/O-bound, 4 worker processes versus 1 (target ≥ 3 ×).

The real system (a private Redis, the API in a thread, a real Celery worker, `benchmarks/harness.py`) runs the same
process-all job twice on the til corpus (577 posts), each time with a fresh artifacts folder (cold caches): once
with a worker of concurrency 1, then with concurrency 4. Text embeddings come from the local OpenAI-compatible
server (tests/fakes/openai_server.py), which answers every embeddings request after 100 ms, each on a thread of
its own, as a remote model would; its address is operator configuration (REPOBUILD_OPENAI_BASE_URL), and the
loopback address is on the operator's allowlist (REPOBUILD_ALLOW_HOSTS), the address policy staying on.
The figure is the embed_text stage's wall time with 1 process over that with 4 (the job's too, in the details), and
the server's own count of requests it was answering at once shows whether the batches really overlapped.

    python -m benchmarks.p4_io_bound [--corpus til] [--latency 0.1] [--keep]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import Harness, Run, discard, stage_wall
from benchmarks.memory import make_corpus
from benchmarks.report import load_average
from benchmarks.targets import Row
from pipeline.settings import Settings
from tests.fakes.openai_server import OpenAIServer

TARGET = 3.0
CONCURRENCIES = (1, 4)


def _figures(run: Run, server: OpenAIServer, requests_before: int, peak: int) -> dict[str, Any]:
    embed = run.embed
    return {"job_s": round(run.wall_s, 2), "embed_text_s": round(stage_wall(embed), 2),
            "phases_s": {k: round(v, 2) for k, v in run.phases.items() if k in ("plan", "batches", "assemble")},
            "batches": int(run.plan.get("batches", 0)), "embedded": int(run.plan.get("embedded", 0)),
            "requests": len(server.requests_to("/v1/embeddings")) - requests_before,
            "peak_requests_at_once": peak, "batch_task_s_sum": round(sum(run.batch_task_s), 2),
            "stages_s": {s.name: round(stage_wall(s), 2) for s in run.job.stages},
            "load_average": load_average()}


def measure(corpus: str = "til", latency_s: float = 0.1, keep: bool = False) -> Row:
    row = Row("P4", f"I/O-bound embedding ({latency_s * 1000:.0f} ms per request), {corpus}: embed_text wall time, "
                    f"{CONCURRENCIES[0]} worker process / {CONCURRENCIES[1]}", f"≥ {TARGET:.0f} ×")
    root = Path(tempfile.mkdtemp(prefix="repobuild-p4-"))
    server = OpenAIServer(latency_s=latency_s)
    base = Settings.from_env().with_(redis_url=None, local_source_roots=(str(root),), embed_provider="openai",
                                     openai_base_url=server.base_url, allow_hosts=("127.0.0.1",))
    harness = Harness(root, base)
    runs: dict[int, dict[str, Any]] = {}
    try:
        source = make_corpus(corpus, root / "corpus", small_articles=6)
        harness.start()
        for conc in CONCURRENCIES:
            settings = harness.settings(root / f"artifacts-c{conc}")  # a fresh folder: cold caches
            print(f"  … process-all on {corpus}, 1 worker × {conc} pool process(es), cold caches (load "
                  f"{load_average()})", file=sys.stderr, flush=True)
            harness.start_worker(settings, concurrency=conc)
            before = len(server.requests_to("/v1/embeddings"))
            server.peak_in_flight = 0
            run = harness.submit(f"p4-c{conc}", source, settings)
            runs[conc] = _figures(run, server, before, server.peak_in_flight)
            harness.stop_workers()
    finally:
        harness.close()
        server.close()
        discard(root, keep)
    one, many = runs[CONCURRENCIES[0]], runs[CONCURRENCIES[1]]
    speedup = one["embed_text_s"] / max(many["embed_text_s"], 1e-9)
    job_speedup = one["job_s"] / max(many["job_s"], 1e-9)
    row.measured = (f"×{speedup:.2f} ({one['embed_text_s']:.1f} s / {many['embed_text_s']:.1f} s); job "
                    f"×{job_speedup:.2f} ({one['job_s']:.1f} s / {many['job_s']:.1f} s)")
    row.ratio = TARGET / speedup  # ≤ 1 meets the target
    row.passed = speedup >= TARGET
    row.details = {"corpus": corpus, "latency_s": latency_s, "embed_text_speedup": round(speedup, 3),
                   "job_speedup": round(job_speedup, 3), "runs": {str(c): r for c, r in runs.items()}}
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="til", help="til (default), guide, small, or another folder of the corpora")
    ap.add_argument("--latency", type=float, default=0.1, help="seconds the server takes per embeddings request")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (worker logs, artifacts)")
    args = ap.parse_args(argv)
    row = measure(args.corpus, args.latency, args.keep)
    print(row.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
