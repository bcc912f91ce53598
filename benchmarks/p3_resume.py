"""P3: `kill -9` of the whole worker during embed_text, a new worker started at once: how long until the job makes
progress again, and how much work was done twice.

    python -m benchmarks.p3_resume [--concurrency 1] [--kills 2] [--keep]

A private Redis, the API and one worker (benchmarks/harness.py); a process-all job with embeddings over
`POST /jobs` on the English posts of opensource-guide (benchmarks/guide_corpus.py), a cold vector cache. Once
embed_text has finished a batch and is running another, the worker's whole process group is killed with SIGKILL
and a new worker is started at once; then, read from the job's state in Redis:

- resume: kill → the stage's next `progress` event that counts more batches done than at the kill (what a user
  watching the job sees move), and kill → the first batch finishing (the batch join set growing);
- recomputed: batches started more than once (the batch state's run counts), and their texts.

The default worker runs one pool process, so a kill interrupts one batch (with N processes, up to N). The kills
are spread over the batches of one job; nothing is asserted about time (the table's verdict says it).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.guide_corpus import english_corpus
from benchmarks.harness import Harness, wait_until
from benchmarks.targets import Row
from pipeline.catalog import job_key
from pipeline.models import JobStatus
from pipeline.plans import job_is_over
from pipeline.settings import Settings
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.jobs_redis import RedisJobStore

STAGE = "embed_text"
LIMIT_S = 10.0
TIMEOUT_S = 150.0  # per wait: a kill whose job never moves again ends the measure instead of hanging it


@dataclass
class Kill:
    at: float  # epoch seconds
    done_at_kill: int
    to_batch_s: float | None = None
    to_progress_s: float | None = None
    redrive: str = ""  # how the stage was re-driven after the kill, from its events


def _total(store: RedisJobStore, job_id: str) -> int:
    cursor = store.stage(job_id, STAGE).cursor or {}
    return int(cursor.get("batches") or 0) if cursor.get("phase") == "batches" else 0


def _running_after(store: RedisJobStore, job_id: str, done_min: int) -> bool:
    """embed_text has `done_min` batches done and is running another one."""
    total = _total(store, job_id)
    batches = store.batches(job_id, STAGE)
    done = batches.done()
    return total > 0 and len(done) >= done_min and bool(batches.leased(set(range(total)) - done))


def _progress_after(store: RedisJobStore, job_id: str, kill: Kill) -> float | None:
    for _id, ev in store.events(job_id, count=100_000):
        if (ev.get("type") == "progress" and ev.get("stage") == STAGE and float(ev["ts"]) > kill.at
                and int(ev.get("done") or 0) > kill.done_at_kill):
            return float(ev["ts"])
    return None


def _redrives_after(store: RedisJobStore, job_id: str, at: float) -> str:
    return "; ".join(f"+{float(ev['ts']) - at:.1f}s {ev.get('message', '')}" for _id, ev in
                     store.events(job_id, count=100_000)
                     if float(ev["ts"]) > at and (ev.get("type") == "redrive" or "lost batch" in ev.get("message", "")))


def measure(concurrency: int = 1, kills: int = 2, root: Path | None = None) -> Row:
    own = root is None
    folder = root or Path(tempfile.mkdtemp(prefix="repobuild-p3-"))
    base = Settings.from_env().with_(redis_url=None, local_source_roots=(str(folder),))
    harness = Harness(folder, base)
    row = Row("P3", "kill -9 of the worker during embed_text: resume, recomputed", "≤ 10 s, ≤ 1 batch")
    try:
        harness.start()
        assert harness.store is not None
        store = harness.store
        settings = harness.settings(folder / "artifacts")
        corpus, _posts, _images = english_corpus(folder / "corpus")
        worker = harness.start_worker(settings, concurrency)
        job_id = f"p3-{time.time_ns()}"
        resp = harness.client.post("/jobs", json={"task": "process-all", "source": str(corpus), "job_id": job_id},
                                   ) if harness.client else None
        if resp is None or resp.status_code != 202:
            raise RuntimeError(f"POST /jobs failed: {resp.text if resp is not None else 'no client'}")
        done: list[Kill] = []
        for k in range(kills):
            # spread over the job: the k-th kill after 1 + 2k batches, while the next one runs
            wait_until(f"kill {k}: embed_text running a batch", lambda k=k: _running_after(store, job_id, 1 + 2 * k),
                       TIMEOUT_S, every=0.005)
            worker.kill9()
            kill = Kill(at=time.time(), done_at_kill=len(store.batches(job_id, STAGE).done()))
            worker = harness.start_worker(settings, concurrency)
            wait_until("a batch done after the kill",
                       lambda kill=kill: len(store.batches(job_id, STAGE).done()) > kill.done_at_kill, TIMEOUT_S)
            kill.to_batch_s = time.time() - kill.at
            progress = wait_until("a progress event after the kill",
                                  lambda kill=kill: _progress_after(store, job_id, kill), TIMEOUT_S)
            kill.to_progress_s = progress - kill.at
            kill.redrive = _redrives_after(store, job_id, kill.at)
            done.append(kill)
            print(f"kill {k}: {kill.done_at_kill} batches done at the kill; progress event after "
                  f"{kill.to_progress_s:.1f} s, a batch done after {kill.to_batch_s:.1f} s; {kill.redrive}", flush=True)
        job = wait_until("the job over", lambda: (lambda j: j if job_is_over(j) else None)(store.get(job_id)), 300)
        if job.status != JobStatus.COMPLETED:
            raise RuntimeError(f"job {job.status.value}: {job.error}")
        runs = store.batches(job_id, STAGE).runs()
        twice = sorted(n for n, r in runs.items() if r > 1)
        artifacts = LocalArtifactStore(settings.artifacts)
        items = sum(len(artifacts.get_json(job_key(job_id, STAGE, f"items/{n:05d}.json"))["items"]) for n in twice)
        worst = max(k.to_progress_s or 0.0 for k in done)
        extra_runs = sum(r - 1 for r in runs.values() if r > 1)
        row.measured = (f"progress {', '.join(f'{k.to_progress_s:.1f}' for k in done)} s after the kills; "
                        f"{extra_runs} batch run(s) repeated over {kills} kill(s) ({items} texts)")
        row.ratio = worst / LIMIT_S
        row.passed = worst <= LIMIT_S and extra_runs <= kills
        row.details = {"concurrency": concurrency, "batches": len(runs), "embed_batch": settings.embed_batch,
                       "kills": [k.__dict__ for k in done], "batches_run_twice": twice, "texts_recomputed": items,
                       "extra_batch_runs": extra_runs}
        return row
    finally:
        harness.close()
        if own:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.p3_resume", description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=1, help="pool processes of each worker (default 1)")
    ap.add_argument("--kills", type=int, default=2, help="kills spread over one job (default 2)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (worker logs, artifacts)")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="repobuild-p3-")) if args.keep else None
    row = measure(args.concurrency, args.kills, root)
    print(row.report())
    if root is not None:
        print(f"kept {root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
