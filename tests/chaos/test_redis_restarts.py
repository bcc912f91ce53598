"""Redis restarted mid-job, with AOF (fsync on every write), three times: jobs complete, workers consume again.

celery#8030 (and #8082, #8384, #10205) describe workers that reconnect after a broker restart and then never
take another message. After each restart this test submits a fresh job and waits for a worker to start it,
and for the job under faults to make progress again; the seconds from "Redis answers again" to that progress
go in the record. The job under faults must end with the same bundle as an uninterrupted run.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.cli.local_services import PrivateRedis
from benchmarks.bundle_diff import diff
from pipeline.models import JobSpec, JobStatus, SourceSpec, StageStatus
from pipeline.settings import Settings
from pipeline.stores.jobs_redis import RedisJobStore
from tests.chaos.conftest import Chaos
from tests.chaos.progress import wait_progress
from tests.conftest import CORPORA, DEMO_REPO, Workers, wait_job
from worker.repobuild_app import RepobuildCelery
from worker.submission import submit

PARSE_ONLY = {"skipEmbeddings": True}
RESUME_WITHIN_S = 60.0  # a worker that stopped consuming never resumes; this only bounds the wait


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    """The conftest's private Redis, with the AOF on, so that a restart keeps every job and message."""
    with PrivateRedis(appendonly=True) as server:
        yield server


def corpus(tmp_path: Path, posts: int) -> Path:
    root = tmp_path / "corpus"
    for post in sorted((CORPORA / "til").rglob("*.md"))[:posts]:
        target = root / post.parent.name / post.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(post, target)
    return root


def submit_job(app: RepobuildCelery, job_id: str, source: Path) -> None:
    spec = JobSpec(job_id=job_id, task="process-all", source=SourceSpec(path=str(source)), options=PARSE_ONLY,
                   output=app.repobuild_settings.output)
    submit(app, spec)


def test_redis_restarted_three_times_mid_job(chaos: Chaos, settings: Settings, redis_server: PrivateRedis,
                                             workers: Workers, celery_app: RepobuildCelery, store: RedisJobStore,
                                             tmp_path: Path) -> None:
    rec = chaos.record("redis restart (AOF)")
    settings = settings.with_(parse_batch=5)
    app = celery_app
    app.repobuild_settings = settings
    source = corpus(tmp_path, chaos.n(150, 577))
    for _ in range(2):
        workers.start(settings, concurrency=1)

    # bundle_diff replaces a bundle's revision (its job id) wherever it occurs: ids that occur in no content
    ref, faulted = (f"aof-{name}-{chaos.rng.getrandbits(32):08x}" for name in ("reference", "faulted"))
    t0 = time.monotonic()
    submit_job(app, ref, source)
    assert wait_job(store, ref, timeout=300).status == JobStatus.COMPLETED
    rec.notes.append(f"uninterrupted reference job: {time.monotonic() - t0:.1f}s")
    rec.jobs_submitted += 1
    rec.jobs_completed += 1

    submit_job(app, faulted, source)
    rec.jobs_submitted += 1
    probes: list[str] = []
    restarts = chaos.n(3, 6)
    for n in range(restarts):
        wait_job(store, faulted, timeout=120, until=lambda job: any(
            s.status == StageStatus.RUNNING for s in job.stages) or job.status.terminal)
        time.sleep(chaos.rng.uniform(0.0, 1.0))
        hard = chaos.rng.random() < 0.5
        before = store.get(faulted)
        redis_server.restart(down_s=chaos.rng.uniform(0.2, 3.0), hard=hard)
        up = time.time()
        rec.injected += 1
        probe = f"aof-probe-{n}-{chaos.rng.getrandbits(32):08x}"
        submit_job(app, probe, DEMO_REPO)
        probes.append(probe)
        rec.jobs_submitted += 1
        resume = wait_progress(store, [probe, faulted], up, RESUME_WITHIN_S)
        probe_taken = wait_progress(store, [probe], up, RESUME_WITHIN_S)
        rec.resume_s.append(round(resume, 2))
        after = store.get(faulted)
        redone = 0
        for old, new in zip(before.stages, after.stages, strict=True):
            if old.cursor and new.resumed_from and old.status == StageStatus.RUNNING:
                redone += max(0, int(old.cursor.get("next", 0)) - int(new.resumed_from.get("next", 0)))
        rec.recomputed.append(redone)
        during = [s.name for s in before.stages if s.status == StageStatus.RUNNING] or before.status.value
        rec.notes.append(f"restart {n + 1} ({'SIGKILL' if hard else 'SIGTERM'}) during {during}: "
                         f"progress {resume:.2f}s after Redis was back, fresh job taken after {probe_taken:.2f}s")

    for job_id in [faulted, *probes]:
        job = wait_job(store, job_id, timeout=300)
        assert job.status == JobStatus.COMPLETED, (job_id, job.error)
        assert all(s.status == StageStatus.DONE for s in job.stages), (job_id, job.stages)
        rec.jobs_completed += 1
    out = Path(settings.output)
    assert diff(out / ref, out / faulted) == []
    assert all(diff(out / probes[0], out / probe) == [] for probe in probes[1:])
