"""End to end: `kill -9` of the whole worker while embed_text runs a batch, a new worker started at once.

The job must complete; at most the one batch the kill interrupted is computed again (the worker runs one pool
process, so that is all it had running), counted from the batches' own run counts; and the stage's coordinating
task, whose countdown the dead worker held unacked, is re-driven because its holder is dead — not after the
visibility timeout, nor after an age limit (kombu's unacked hash still has the old message when it is).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from api.cli.local_services import WorkerProcess
from benchmarks.harness import wait_until
from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.stores.jobs_redis import RedisJobStore
from tests.conftest import DEMO_REPO, ApiServer, Workers, wait_job
from worker.inflight import unacked_messages
from worker.reconciler import ORPHANED

pytestmark = pytest.mark.e2e
STAGE = "embed_text"


def _coordinator_held(store: RedisJobStore, job_id: str) -> bool:
    return ("repobuild.embed_text", [job_id]) in unacked_messages(store.r)


def _batch_running(store: RedisJobStore, job_id: str, done_min: int, stale: set[int]) -> bool:
    """A batch runs (not one whose lease a worker killed before still holds) while the worker holds the stage's own
    countdown unacked (taken while its pool was free) and nobody runs the stage itself."""
    cursor = store.stage(job_id, STAGE).cursor or {}
    total = int(cursor.get("batches") or 0)
    batches = store.batches(job_id, STAGE)
    done = batches.done()
    return (cursor.get("phase") == "batches" and len(done) >= done_min
            and bool(batches.leased(set(range(total)) - done) - stale) and not store.lease_held(job_id, STAGE)
            and _coordinator_held(store, job_id))


def test_kill9_of_the_worker_in_embed_text_redoes_one_batch_and_re_drives_the_dead_holders_stage(
        settings: Settings, workers: Workers, store: RedisJobStore, tmp_path: Path,
        api_factory: Callable[[Settings], ApiServer]) -> None:
    settings = settings.with_(embed_batch=3, artifacts=str(tmp_path / "cold-artifacts"))
    api = api_factory(settings)
    worker: WorkerProcess = workers.start(settings, concurrency=1)
    job_id = "dead-holder"
    r = api.client.post("/jobs", json={"task": "process-all", "source": str(DEMO_REPO), "job_id": job_id})
    assert r.status_code == 202, r.text
    # The kill must land while a batch runs and the coordinating task waits on its countdown (its message held
    # unacked, its lease free); a kill that misses (the coordinator ran in between) is tried again.
    stale: set[int] = set()
    for attempt in range(4):
        wait_until("embed_text running a batch, its countdown held",
                   lambda n=1 + attempt, stale=stale: _batch_running(store, job_id, n, stale), 120, every=0.005)
        worker.kill9()
        killed_at = time.time()
        runs_at_kill = store.batches(job_id, STAGE).runs()
        stale = store.batches(job_id, STAGE).leased(set(runs_at_kill))
        held = _coordinator_held(store, job_id) and not store.lease_held(job_id, STAGE)
        worker = workers.start(settings, concurrency=1)
        if held:
            break
    else:
        pytest.fail("no kill landed while the coordinating task's countdown was held")

    job = wait_job(store, job_id, timeout=240)
    assert job.status == JobStatus.COMPLETED, job.error
    runs = store.batches(job_id, STAGE).runs()
    again = {n: r - runs_at_kill.get(n, 0) for n, r in runs.items() if r > 1 and runs_at_kill.get(n, 0) >= 1}
    assert sum(again.values()) <= 1, f"batches computed again after the kill: {again}"
    redrives = [e for _id, e in store.events(job_id, count=10_000)
                if e.get("type") == "redrive" and float(e["ts"]) > killed_at and e.get("stage") == STAGE]
    # the path that does not wait: its message found held by a dead worker (kombu still had it unacked)
    assert any(ORPHANED in e["message"] for e in redrives), redrives
