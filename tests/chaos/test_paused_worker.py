"""Chaos: a worker frozen (SIGSTOP of its whole process group) for longer than its lease while it runs a stage.

Another worker's reconciler finds the lease expired and re-drives the stage, which resumes from its cursor.
When the frozen worker is thawed (SIGCONT) it still believes it runs the stage: every write it then tries
must be refused by its stale lease token, and it must stop. The job's result must be the reference's, with
no issue recorded twice."""

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
    REFERENCE,
    check_against_reference,
    first_progress_after,
    freeze_stage_runner,
    run_reference,
    stage_runs,
    submit,
    til_corpus,
)
from tests.conftest import ApiServer, Workers, wait_job
from worker.repobuild_app import RepobuildCelery


def test_thawed_worker_is_fenced_off(settings: Settings, workers: Workers, store: JobStore,
                                     celery_app: RepobuildCelery, tmp_path: Path,
                                     api_factory: Callable[[Settings], ApiServer], chaos: Chaos) -> None:
    rec = chaos.record("pause-past-lease")
    # parse runs its own batches in its task (fan-out off): the one long stage task this test needs
    settings = settings.with_(parse_batch=3, fan_out=False)
    # every post has an issue, so a run thawed mid-batch has issues in hand when it resumes
    corpus = til_corpus(tmp_path, chaos.n(200, 577), broken_links=True)
    api = api_factory(settings)
    started = [workers.start(settings), workers.start(settings)]
    ref = run_reference(api, store, corpus)
    total = int(ref.stage("parse").total)
    assert store.issue_count(REFERENCE) >= total

    for round_ in range(chaos.n(1, 5)):
        job_id = f"pause-{round_}-{chaos.rng.getrandbits(32):08x}"
        submit(api, corpus, job_id)
        rec.jobs_submitted += 1
        frozen, stale, paused_at = freeze_stage_runner(store, started, job_id, "parse",
                                                       chaos.rng.randint(3, total // 2))
        assert frozen.proc is not None
        rec.injected += 1
        try:
            at_pause = store.stage(job_id, "parse")

            def taken_over(job: JobView) -> bool:
                return job.stage("parse").attempts >= 2 or job.status.terminal

            # the other worker takes the stage over once the lease (3 s) has expired
            wait_job(store, job_id, timeout=60, until=taken_over)
            # not before the lease lapsed: it was last renewed at most a third of its ttl before the pause
            assert time.time() - paused_at >= settings.lease_ttl_s * 2 / 3
            # thaw while the new owner runs, or after the job is over: the seed picks
            if chaos.rng.random() < 0.5:
                wait_job(store, job_id, timeout=180)
            else:
                time.sleep(chaos.rng.uniform(0.0, 1.0))
        finally:
            os.killpg(frozen.proc.pid, signal.SIGCONT)
        thawed_at = time.time()

        job = wait_job(store, job_id, timeout=180)
        assert job.status == JobStatus.COMPLETED, job.error
        rec.jobs_completed += 1
        # the thawed run stops: it leaves the pool process within a few seconds, having written nothing
        deadline = time.monotonic() + 30
        while any(t["args"] and t["args"][0] == job_id
                  for tasks in (celery_app.control.inspect(timeout=1).active() or {}).values() for t in tasks):
            assert time.monotonic() < deadline, "the thawed worker still runs the stage"
        runs = stage_runs(store, job_id, "parse")
        late = [r for r in runs if r.run == stale and r.last > paused_at]
        assert late == [], f"the stale run wrote after its lease expired: {late}"
        parse = job.stage("parse")
        assert parse.resumed_from is not None and at_pause.cursor is not None
        assert parse.resumed_from["next"] >= at_pause.cursor["next"]
        rec.recomputed.append(int(at_pause.done) - int(parse.resumed_from["next"]))
        resumed = first_progress_after(store, job_id, "parse", paused_at)
        if resumed is not None:
            rec.resume_s.append(round(resumed - paused_at, 2))
        check_against_reference(store, settings, rec, job_id)
        rec.notes.append(f"thawed {thawed_at - paused_at:.1f}s after the pause")
