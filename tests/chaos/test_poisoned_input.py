"""Chaos: an input that kills its process every time the stage reaches it.

A killed process cannot record its own failure, and Celery requeues its message (acks_late +
reject_on_worker_lost), so without a count kept outside the process the batch would be redelivered
forever. Parse renders its posts in batches on the pool, so the deaths are the runs of the batch that holds
the file: the runs after each death count it (`lost_runs`); once the retry limit is reached the batch fails,
and with it the stage, with a message naming the file, and nothing is sent again. No other batch dies. A
healthy job submitted while the poisoned one keeps killing processes completes, with the reference's bundle.

The death is injected at the real input through `REPOBUILD_FAULT_KILL_ITEM` (pipeline/faults.py says why)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import redis

from pipeline.catalog import job_key
from pipeline.models import JobStatus, StageStatus
from pipeline.settings import Settings
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.jobs import JobStore
from tests.chaos.conftest import Chaos
from tests.chaos.harness import REFERENCE, bundle_differences, run_reference, stage_runs, submit, til_corpus
from tests.conftest import ApiServer, Workers, wait_job
from worker.inflight import jobs_in_broker

POISON = "poisoned-*.md"


def test_an_input_that_kills_every_time_is_dead_lettered(settings: Settings, workers: Workers, store: JobStore,
                                                         tmp_path: Path,
                                                         api_factory: Callable[[Settings], ApiServer],
                                                         chaos: Chaos) -> None:
    rec = chaos.record("poisoned-input")
    settings = settings.with_(parse_batch=5, max_retries=chaos.n(3, 5), fault_kill_item=f"*{POISON}")
    api = api_factory(settings)
    healthy = til_corpus(tmp_path / "healthy", chaos.n(120, 400))
    worker = workers.start(settings)
    run_reference(api, store, healthy)

    for round_ in range(chaos.n(1, 3)):
        poisoned = til_corpus(tmp_path / f"poisoned-{round_}", chaos.n(120, 400))
        folders = sorted(p for p in poisoned.iterdir() if p.is_dir())
        bad = chaos.rng.choice(folders) / POISON.replace("*", f"{chaos.rng.getrandbits(24):06x}")
        bad.write_text("# An ordinary-looking note\n\nWhose processing kills the process every time.\n")
        bad_rel = bad.relative_to(poisoned).as_posix()
        job_id = f"poison-{round_}-{chaos.rng.getrandbits(32):08x}"
        submit(api, poisoned, job_id)
        rec.jobs_submitted += 1

        # a healthy job submitted while the poisoned one is killing processes
        batches = store.batches(job_id, "parse")
        wait_job(store, job_id, timeout=120, until=lambda _job, b=batches: max(b.runs().values(), default=0) >= 2)
        ok_id = f"healthy-{round_}-{chaos.rng.getrandbits(32):08x}"
        submit(api, healthy, ok_id)
        rec.jobs_submitted += 1

        job = wait_job(store, job_id, timeout=240)
        assert job.status == JobStatus.FAILED, job
        parse = job.stage("parse")
        assert parse.status == StageStatus.FAILED
        # dead-lettered after max_retries deaths, each a run of the file's batch, and the message says so
        index = LocalArtifactStore(settings.artifacts).get_json(job_key(job_id, "parse", "index.json"))
        poisoned = [p["path"] for p in index["posts"]].index(bad_rel) // int(index["batch"])
        deaths = batches.lost_runs(poisoned)
        rec.injected += deaths
        assert deaths == batches.runs()[poisoned] == settings.max_retries, batches.runs()
        assert [n for n in batches.runs() if batches.lost_runs(n)] == [poisoned]  # no other batch died
        assert batches.failed().keys() == {poisoned}
        assert job.error is not None and job.error["stage"] == "parse", job.error
        assert bad_rel in job.error["message"] and "its process died" in job.error["message"], job.error
        assert bad_rel in (parse.error or "") and "died" in (parse.error or "")
        rec.notes.append(f"dead-lettered after {deaths} deaths: {job.error['message'][:160]}")

        # ... and not redelivered: no new run of the stage or of a batch after a lease and a reconcile round,
        # no message left
        runs, batch_runs = len(stage_runs(store, job_id, "parse")), batches.runs()
        time.sleep(settings.lease_ttl_s + 2 * settings.reconcile_interval_s)
        assert len(stage_runs(store, job_id, "parse")) == runs
        assert batches.runs() == batch_runs
        assert store.get(job_id).status == JobStatus.FAILED
        broker = redis.Redis.from_url(settings.redis_url or "")
        try:
            assert job_id not in jobs_in_broker(broker)
        finally:
            broker.close()

        ok = wait_job(store, ok_id, timeout=180)
        assert ok.status == JobStatus.COMPLETED, ok.error
        rec.jobs_completed += 1
        assert bundle_differences(settings, REFERENCE, ok_id) == []
        assert worker.alive()
