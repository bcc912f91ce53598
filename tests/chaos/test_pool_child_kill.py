"""Chaos: kill -9 of the one prefork pool process that runs a stage, not of its worker.

The worker's main process survives and starts a new pool process; Celery sees WorkerLostError and
requeues the message (acks_late + reject_on_worker_lost). The stage must resume from its checkpoint in
a new run (after the dead run's lease lapses), never lost and never run twice at once; the bundle must
equal an undisturbed run's."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore, JobView
from tests.chaos.conftest import Chaos
from tests.chaos.harness import (
    check_against_reference,
    first_progress_after,
    pool_children,
    run_pid,
    run_reference,
    stage_running_past,
    submit,
    til_corpus,
)
from tests.conftest import ApiServer, Workers, wait_job


def test_kill9_of_the_pool_process_running_a_stage(settings: Settings, workers: Workers, store: JobStore,
                                                   tmp_path: Path, api_factory: Callable[[Settings], ApiServer],
                                                   chaos: Chaos) -> None:
    rec = chaos.record("kill9-pool-child")
    # parse runs its own batches in its task (fan-out off): the one long stage task this test needs
    settings = settings.with_(parse_batch=3, fan_out=False)
    corpus = til_corpus(tmp_path, chaos.n(200, 577), broken_links=True)
    api = api_factory(settings)
    worker = workers.start(settings)
    assert worker.proc is not None
    ref = run_reference(api, store, corpus)
    total = int(ref.stage("parse").total)

    for round_ in range(chaos.n(2, 6)):
        job_id = f"kill-{round_}-{chaos.rng.getrandbits(32):08x}"
        submit(api, corpus, job_id)
        rec.jobs_submitted += 1
        kills = chaos.rng.randint(1, chaos.n(1, 2))
        for k in range(kills):
            # each kill lands later in the stage than the last checkpoint the previous one left
            done = store.stage(job_id, "parse").done
            wait_job(store, job_id, timeout=120, until=stage_running_past(
                store, job_id, "parse", chaos.rng.randint(done + 1, max(done + 1, total * (k + 1) // (kills + 1)))))
            victim = run_pid(store, job_id, "parse")
            children = pool_children(worker.proc.pid)
            assert victim in children, f"{victim} is not a pool process of the worker ({children})"
            at_kill = store.stage(job_id, "parse")
            os.kill(victim, signal.SIGKILL)
            killed_at = time.time()
            rec.injected += 1

            def resumed(job: JobView, at: float = killed_at) -> bool:
                return first_progress_after(store, job.spec.job_id, "parse", at) is not None

            wait_job(store, job_id, timeout=120, until=resumed)
            resumed_at = first_progress_after(store, job_id, "parse", killed_at)
            assert resumed_at is not None
            rec.resume_s.append(round(resumed_at - killed_at, 2))
            state = store.stage(job_id, "parse")
            assert state.resumed_from is not None and at_kill.cursor is not None
            assert state.resumed_from["next"] >= at_kill.cursor["next"]
            # what the dead run had rendered past its last checkpoint is rendered again
            rec.recomputed.append(max(0, int(at_kill.done) - int(state.resumed_from["next"])))
        assert worker.alive(), "killing a pool process must not take the worker down"

        job = wait_job(store, job_id, timeout=180)
        assert job.status == JobStatus.COMPLETED, job.error
        rec.jobs_completed += 1
        parse = job.stage("parse")
        assert parse.attempts == kills + 1, parse
        check_against_reference(store, settings, rec, job_id)
    assert len(pool_children(worker.proc.pid)) == 2  # the pool replaced what was killed
