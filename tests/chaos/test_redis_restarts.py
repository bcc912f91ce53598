"""Redis restarted mid-job, with AOF (fsync on every write), three times: jobs complete, workers consume again.

celery#8030 (and #8082, #8384, #10205) describe workers that reconnect after a broker restart and then never
take another message. After each restart this test submits a fresh job and waits for a worker to start it,
and for the job under faults to make progress again; the seconds from "Redis answers again" to that progress
go in the record. The job under faults must end with the same bundle as an uninterrupted run.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import redis
from kombu.exceptions import OperationalError

from api.cli.local_services import PrivateRedis, WorkerProcess
from benchmarks.bundle_diff import diff
from pipeline.models import JobSpec, JobStatus, SourceSpec, StageStatus
from pipeline.settings import Settings
from pipeline.stores.jobs_redis import RedisJobStore
from tests.chaos.conftest import Chaos
from tests.chaos.progress import wait_progress
from tests.chaos.redis_faults import aof_redis_server  # noqa: F401 - this module's Redis keeps an AOF
from tests.conftest import CORPORA, DEMO_REPO, Workers, wait_job, wait_ready
from worker.repobuild_app import RepobuildCelery
from worker.submission import submit

PARSE_ONLY = {"skipEmbeddings": True}
RESUME_WITHIN_S = 60.0  # a worker that stopped consuming never resumes; this only bounds the wait


def english_articles(tmp_path: Path, n: int) -> Path:
    """The first `n` English articles of opensource-guide: ~17 passages each, embedded in batches of 8."""
    root = tmp_path / "guide"
    root.mkdir()
    for post in sorted((CORPORA / "opensource-guide" / "_articles").glob("*.md"))[:n]:
        shutil.copy2(post, root / post.name)
    return root


def answers_ping(app: RepobuildCelery, w: WorkerProcess) -> None:
    """The worker answers a ping. kombu's connection pools are global, so our own side may first draw connections
    the restart closed: those fail once and are dropped; the worker's side is what is checked."""
    deadline = time.monotonic() + RESUME_WITHIN_S
    while True:
        try:
            wait_ready(app, w, timeout=RESUME_WITHIN_S)
            return
        except (redis.exceptions.ConnectionError, OperationalError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def submit_job(app: RepobuildCelery, job_id: str, source: Path, options: dict[str, object]) -> None:
    spec = JobSpec(job_id=job_id, task="process-all", source=SourceSpec(path=str(source)), options=options,
                   output=app.repobuild_settings.output)
    submit(app, spec)


def test_redis_restarted_three_times_mid_job(chaos: Chaos, settings: Settings, redis_server: PrivateRedis,
                                             workers: Workers, celery_app: RepobuildCelery, store: RedisJobStore,
                                             tmp_path: Path) -> None:
    rec = chaos.record("redis restart (AOF)")
    outage = chaos.record("redis down mid-stage")
    settings = settings.with_(embed_batch=8, task_budget_s=5)
    app = celery_app
    source = english_articles(tmp_path, chaos.n(8, 30))
    pool = [workers.start(settings, concurrency=1) for _ in range(2)]
    # bundle_diff replaces a bundle's revision (its job id) wherever it occurs: ids of one length found in no content
    faulted, ref = (f"aof-{name}-{chaos.rng.getrandbits(32):08x}" for name in ("f", "r"))
    submit_job(app, faulted, source, {})
    rec.jobs_submitted += 1
    probes: list[str] = []
    # quick restarts, then an outage longer than the leases (3 s here) and the clients' own retries
    faults = [("restart", rec)] * chaos.n(3, 6) + [("outage", outage)] * chaos.n(1, 2)
    for n, (fault, record) in enumerate(faults):
        wait_job(store, faulted, timeout=120, until=lambda job: any(
            s.status == StageStatus.RUNNING for s in job.stages) or job.status.terminal)
        time.sleep(chaos.rng.uniform(0.0, 1.0))
        hard = fault == "outage" or chaos.rng.random() < 0.5
        down = chaos.rng.uniform(6.0, 10.0) if fault == "outage" else chaos.rng.uniform(0.2, 3.0)
        before = store.get(faulted)
        batches_before = store.batches(faulted, "embed_text").done()
        redis_server.restart(down_s=down, hard=hard)
        up = time.time()
        record.injected += 1
        probe = f"aof-p{n}-{chaos.rng.getrandbits(32):08x}"
        submit_job(app, probe, DEMO_REPO, PARSE_ONLY)
        probes.append(probe)
        record.jobs_submitted += 1
        resume = wait_progress(store, [probe, faulted], up, RESUME_WITHIN_S)
        probe_taken = wait_progress(store, [probe], up, RESUME_WITHIN_S)
        record.resume_s.append(round(resume, 2))
        for w in pool:  # every worker, not just one of them, lives through it and answers again
            assert w.alive(), f"a worker exited after {fault} {n + 1}: {Path(w.log_path or '').read_text()[-2000:]}"
            answers_ping(app, w)
        lost = batches_before - store.batches(faulted, "embed_text").done()
        assert not lost, f"embed batches done before the {fault} are no longer done: {lost}"
        during = [s.name for s in before.stages if s.status == StageStatus.RUNNING] or before.status.value
        record.notes.append(f"{fault} {n + 1} ({'SIGKILL' if hard else 'SIGTERM'}, down {down:.1f}s) during "
                            f"{during}: progress {resume:.2f}s after Redis was back, a fresh job taken after "
                            f"{probe_taken:.2f}s")

    for job_id in [faulted, *probes]:
        job = wait_job(store, job_id, timeout=300)
        assert job.status == JobStatus.COMPLETED, (job_id, job.error)
        assert all(s.status == StageStatus.DONE for s in job.stages), (job_id, job.stages)
        (outage if job_id in probes[-chaos.n(1, 2):] else rec).jobs_completed += 1
    batches = store.batches(faulted, "embed_text")
    total = int((store.stage(faulted, "embed_text").cursor or {})["batches"])
    assert batches.done() == set(range(total))
    rerun = sum(r - 1 for r in batches.runs().values() if r > 1)
    rec.recomputed.append(rerun)

    # the reference: the same job uninterrupted, its vectors from the cache the faulted one filled
    submit_job(app, ref, source, {})
    assert wait_job(store, ref, timeout=300).status == JobStatus.COMPLETED
    retried = {s.name: s.attempts for s in store.get(faulted).stages if s.attempts > 1}
    outage.notes.append(f"faulted job: {total} embed batches, {rerun} batch runs beyond one; stages started more "
                        f"than once (attempts): {retried or 'none'}")
    out = Path(settings.output)
    assert diff(out / ref, out / faulted) == []
    assert all(diff(out / probes[0], out / probe) == [] for probe in probes[1:])
