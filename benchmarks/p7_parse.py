"""P7: the parse stage's time per post on til and opensource-guide (target ≤ 10 ms per post).

The real system (a private Redis, the API in a thread, one worker process with its prefork pool, as
`benchmarks/harness.py` starts them) runs one process-all job per corpus, submitted over HTTP with `skipEmbeddings`
(parse does the same work either way; the embedding stages are not what this measures). Everything comes from the
job's state in Redis and its events:
- wall: the parse stage's first start to done, what a user waits (StageState.wall_s);
- task: the time spent in its tasks, its own (discovery, its waits for the batches, assemble) and its render
  batches' on every pool process (StageState.task_s: more than wall when the batches overlap);
- the split between what a stage pays once and what it pays per post: `discover` (finding the posts and media,
  hashing and checking every image, slugs, the batches sent: until its `0/N` progress event), `render` (the batches
  on the pool, until the stage saw the last one done: `N/N`) and `assemble` (links, graph and the result files: until
  done). Per post = render ÷ posts; fixed = the rest.

Corpora: `til` (577 posts), `guide` (the English opensource-guide articles and their images) and
`opensource-guide` (all of it, every translation). The target holds for til and the whole opensource-guide.

    python -m benchmarks.p7_parse [--corpora til,guide,opensource-guide] [--repeat N] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.harness import JOB_TIMEOUT_S, Harness, discard
from benchmarks.memory import make_corpus
from benchmarks.report import load_average
from benchmarks.targets import Row, table
from pipeline.models import JobStatus
from pipeline.plans import job_is_over
from pipeline.settings import Settings
from pipeline.stores.jobs import JobView

LIMIT_MS = 10.0
TARGET_CORPORA = ("til", "opensource-guide")  # where the issue sets the target; `guide` is shown beside them
STAGE = "parse"


@dataclass
class ParseRun:
    corpus: str
    posts: int
    medias: int
    wall_s: float  # the stage's first start → done
    task_s: float  # in the stage's tasks and its batches'
    batch_s: float  # of which its batches'
    continuations: int
    queued_s: float  # the stage before it done → started: the hand-off
    discover_s: float
    render_s: float
    assemble_s: float
    load: str  # the load average when the job finished

    @property
    def wall_ms_per_post(self) -> float:
        return 1000 * self.wall_s / max(self.posts, 1)

    @property
    def render_ms_per_post(self) -> float:
        return 1000 * self.render_s / max(self.posts, 1)

    @property
    def fixed_s(self) -> float:
        return self.wall_s - self.render_s

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "wall_ms_per_post": round(self.wall_ms_per_post, 2),
                "render_ms_per_post": round(self.render_ms_per_post, 2), "fixed_s": round(self.fixed_s, 3)}


def phases(harness: Harness, job: JobView) -> tuple[float, float, float]:
    """(discover, render, assemble) seconds of the parse stage, from its progress events."""
    assert harness.store is not None
    stage = job.stage(STAGE)
    start, end = stage.started_at or 0.0, stage.finished_at or 0.0
    planned = rendered = None
    for _id, ev in harness.store.events(job.spec.job_id, count=100_000):
        if ev.get("stage") != STAGE or ev.get("type") != "progress":
            continue
        if planned is None:
            planned = float(ev["ts"])  # the first: 0/N, written once discovery saved the index
        if ev.get("done") == ev.get("total"):
            rendered = float(ev["ts"])
    planned = planned or start
    rendered = rendered or planned
    return planned - start, rendered - planned, end - rendered


def run_job(harness: Harness, label: str, corpus: Path) -> ParseRun:
    """One process-all job over HTTP (no embeddings), waited for; the parse stage's figures from its state."""
    assert harness.client is not None and harness.store is not None
    job_id = f"p7-{label}-{time.time_ns()}"
    resp = harness.client.post("/jobs", json={"task": "process-all", "source": str(corpus), "job_id": job_id,
                                              "options": {"skipEmbeddings": True}})
    if resp.status_code != 202:
        raise RuntimeError(f"POST /jobs answered {resp.status_code}: {resp.text}")
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not job_is_over(job := harness.store.get(job_id)):
        if not all(w.alive() for w in harness.workers):
            raise RuntimeError(f"the worker exited during {label} (run with --keep for its log)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not finish within {JOB_TIMEOUT_S:.0f} s")
        # The figures come from the job's own timestamps, not from this loop: it looks rarely, so that its reads
        # (and Redis answering them) take no CPU from the two pool processes being measured.
        time.sleep(0.5)
    if job.status != JobStatus.COMPLETED:
        raise RuntimeError(f"job {job_id} {job.status.value}: {job.error}")
    stage = job.stage(STAGE)
    discover, render, assemble = phases(harness, job)
    names = [s.name for s in job.stages]
    before = job.stages[names.index(STAGE) - 1] if names.index(STAGE) else None
    # (enqueued_at is the latest continuation's: the stage re-queues itself while it waits for its batches)
    handed = before.finished_at if before is not None and before.finished_at else stage.started_at
    return ParseRun(label, int(stage.summary.get("posts") or 0), int(stage.summary.get("medias") or 0),
                    stage.wall_s(), stage.task_s, stage.batch_s, stage.continuations,
                    (stage.started_at or 0.0) - (handed or 0.0), discover, render, assemble, load_average())


def median_run(runs: list[ParseRun]) -> ParseRun:
    """The run of median stage wall time (one real run, not a blend of several)."""
    ordered = sorted(runs, key=lambda r: r.wall_s)
    return ordered[(len(ordered) - 1) // 2]


def row(found: dict[str, ParseRun]) -> Row:
    measured = [f"{name} {r.wall_ms_per_post:.1f} ms ({r.posts} posts)" for name, r in found.items()]
    judged = [found[n].wall_ms_per_post for n in TARGET_CORPORA if n in found]
    worst = max(judged) if judged else None
    return Row("P7", "parse stage wall time per post (til, whole opensource-guide; English guide shown)",
               f"≤ {LIMIT_MS:.0f} ms per post", "; ".join(measured) or "not measured yet",
               None if worst is None else worst / LIMIT_MS, None if worst is None else worst <= LIMIT_MS,
               {name: r.to_json() for name, r in found.items()})


def details(found: dict[str, ParseRun]) -> str:
    head = (f"  {'corpus':<17} {'posts':>5} {'media':>5} {'wall s':>7} {'ms/post':>8} {'task s':>7} {'batch s':>7} "
            f"{'cont':>4} "
            f"{'queued':>7} {'discover':>8} {'render':>7} {'ms/post':>8} {'assemble':>8} {'fixed s':>8}  load")
    lines = ["parse stage, from the job state (wall = first start → done; render ms/post = the per-post part)", head]
    for name, r in found.items():
        lines.append(f"  {name:<17} {r.posts:>5} {r.medias:>5} {r.wall_s:>7.2f} {r.wall_ms_per_post:>8.2f} "
                     f"{r.task_s:>7.2f} {r.batch_s:>7.2f} {r.continuations:>4} {r.queued_s:>7.2f} {r.discover_s:>8.2f} "
                     f"{r.render_s:>7.2f} {r.render_ms_per_post:>8.2f} {r.assemble_s:>8.2f} {r.fixed_s:>8.2f}  "
                     f"{r.load}")
    return "\n".join(lines)


def measure(corpora: tuple[str, ...] = ("til", "guide", "opensource-guide"), repeat: int = 1,
            concurrency: int = 2, keep: bool = False) -> Row:
    """Each corpus `repeat` times through one worker; the row of the median run of each."""
    return row(measure_runs(corpora, repeat, concurrency, keep))


def measure_runs(corpora: tuple[str, ...], repeat: int = 1, concurrency: int = 2,
                 keep: bool = False) -> dict[str, ParseRun]:
    root = Path(tempfile.mkdtemp(prefix="repobuild-p7-"))
    base = Settings.from_env().with_(redis_url=None, local_source_roots=(str(root),))
    harness = Harness(root, base)
    found: dict[str, ParseRun] = {}
    try:
        harness.start()
        settings = harness.base.with_(artifacts=str(root / "artifacts"), output=str(root / "out"),
                                      temp_dir=str(root / "tmp"))
        harness.start_worker(settings, concurrency=concurrency)
        for name in corpora:
            corpus = make_corpus(name, root / "corpora", 0)
            runs = [run_job(harness, name, corpus) for _ in range(repeat)]
            found[name] = median_run(runs)
            print(f"{name}: " + ", ".join(f"{r.wall_ms_per_post:.2f}" for r in runs) + " ms/post", flush=True)
        return found
    finally:
        harness.close()
        discard(root, keep)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", default="til,guide,opensource-guide")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the row here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (bundles, worker log)")
    args = ap.parse_args(argv)
    print(f"load average at start: {load_average()} ({os.cpu_count()} cores)")
    found = measure_runs(tuple(args.corpora.split(",")), args.repeat, args.concurrency, args.keep)
    measured = row(found)
    print("\n" + table([measured]) + "\n\n" + details(found) + f"\nload average at the end: {load_average()}")
    if args.json:
        args.json.write_text(json.dumps(measured.to_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
