"""Chaos: the same stage message delivered twice at once (a copied message while the first copy still runs).

A copy of the running stage's message must find the lease taken and back off without marking anything;
a copy of a stage already done must only move on. Checked from the job's state and event log in Redis
and from the bundle, which must equal an undisturbed run's."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore
from tests.chaos.conftest import Chaos
from tests.chaos.harness import (
    check_against_reference,
    run_reference,
    stage_running_past,
    submit,
    til_corpus,
)
from tests.conftest import ApiServer, Workers, wait_job
from worker.repobuild_app import RepobuildCelery


def test_copied_stage_message_backs_off(settings: Settings, workers: Workers, store: JobStore,
                                        celery_app: RepobuildCelery, tmp_path: Path,
                                        api_factory: Callable[[Settings], ApiServer], chaos: Chaos) -> None:
    rec = chaos.record("duplicate-delivery")
    # parse runs its own batches in its task (fan-out off): the one long stage task this test needs
    settings = settings.with_(parse_batch=4, fan_out=False)
    # enough posts that parse outlasts the copies' trip to a pool process on a fast machine (160 did not, once)
    corpus = til_corpus(tmp_path, chaos.n(400, 577))
    api = api_factory(settings)
    # three pool processes: the stage, and free ones for the copies to run on at the same time
    workers.start(settings, concurrency=3)
    ref = run_reference(api, store, corpus)
    total = int(ref.stage("parse").total)

    dropped = 0
    for round_ in range(chaos.n(1, 6)):
        job_id = f"dup-{round_}-{chaos.rng.getrandbits(32):08x}"
        submit(api, corpus, job_id)
        rec.jobs_submitted += 1
        at = chaos.rng.randint(4, total // 3)
        wait_job(store, job_id, timeout=120, until=stage_running_past(store, job_id, "parse", at))
        before = store.stage(job_id, "parse")
        # copies of the running stage, and now and then of a stage already done
        first = ref.stages[0].name
        copies = ["parse"] * chaos.rng.randint(1, 3) + ([first] if chaos.rng.random() < 0.5 else [])
        for stage in copies:
            celery_app.tasks[f"repobuild.{stage}"].apply_async((job_id,))
        rec.injected += len(copies)
        sent = time.time()

        job = wait_job(store, job_id, timeout=180)
        assert job.status == JobStatus.COMPLETED, job.error
        rec.jobs_completed += 1
        events = [ev for _id, ev in store.events(job_id, count=100_000)]
        duplicates = [ev for ev in events if ev["type"] == "duplicate" and float(ev["ts"]) >= sent]
        dropped += len(duplicates)

        parse = job.stage("parse")
        runs = check_against_reference(store, settings, rec, job_id)
        # the copies started nothing: one run, one attempt, no continuation, the cursor only moved forward
        assert len(runs) == 1, runs
        assert (parse.attempts, parse.continuations) == (1, 0), parse
        assert before.cursor is not None and parse.cursor is not None
        assert parse.cursor["next"] >= before.cursor["next"]
        assert (parse.done, parse.total) == (total, total)
        assert job.stage(first).attempts == 1
        assert [ev["type"] for ev in events].count("completed") == 1
        rec.recomputed.append(0)
    # the copies really arrived while the stage ran (else this tested nothing)
    assert dropped >= 1
    rec.notes.append(f"{dropped} copies dropped by the lease while the stage ran")
