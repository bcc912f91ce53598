"""Chaos: SIGTERM to a busy worker's main process (warm shutdown, what a deploy or a scale-down sends).

The worker stops taking messages and lets the running stage task finish: the stage spends its budget,
sends its continuation and the worker exits. Another worker carries on from the continuation. Nothing is
lost (the stage is never re-driven: one attempt), nothing runs twice at once, and the bundle equals an
undisturbed run's."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore
from tests.chaos.conftest import Chaos
from tests.chaos.harness import (
    check_against_reference,
    first_progress_after,
    run_pid,
    run_reference,
    stage_running_past,
    stage_runs,
    submit,
    til_corpus,
    worker_of,
)
from tests.conftest import ApiServer, Workers, wait_job


def test_sigterm_of_a_busy_worker_finishes_or_hands_over(settings: Settings, workers: Workers, store: JobStore,
                                                         tmp_path: Path,
                                                         api_factory: Callable[[Settings], ApiServer],
                                                         chaos: Chaos) -> None:
    rec = chaos.record("sigterm-busy-worker")
    # a short budget: the stage runs as a series of continuations, each a task a warm shutdown waits for; parse
    # runs its own batches (fan-out off), or its task would only look at batches other processes render
    settings = settings.with_(parse_batch=3, task_budget_s=0.3, fan_out=False)
    corpus = til_corpus(tmp_path, chaos.n(200, 577), broken_links=True)
    api = api_factory(settings)
    live = [workers.start(settings), workers.start(settings)]
    ref = run_reference(api, store, corpus)
    total = int(ref.stage("parse").total)

    for round_ in range(chaos.n(1, 5)):
        job_id = f"term-{round_}-{chaos.rng.getrandbits(32):08x}"
        submit(api, corpus, job_id)
        rec.jobs_submitted += 1
        wait_job(store, job_id, timeout=120,
                 until=stage_running_past(store, job_id, "parse", chaos.rng.randint(3, total // 2)))
        busy = worker_of(live, run_pid(store, job_id, "parse"))
        running = stage_runs(store, job_id, "parse")[-1].run
        assert busy.proc is not None
        os.kill(busy.proc.pid, signal.SIGTERM)
        termed_at = time.time()
        rec.injected += 1
        busy.proc.wait(60)
        assert busy.proc.returncode == 0, f"warm shutdown exited {busy.proc.returncode}"
        live.remove(busy)
        # keep two workers: the seed picks whether the replacement is there before the job ends
        if chaos.rng.random() < 0.5:
            live.append(workers.start(settings))

        job = wait_job(store, job_id, timeout=180)
        assert job.status == JobStatus.COMPLETED, job.error
        rec.jobs_completed += 1
        if len(live) < 2:
            live.append(workers.start(settings))
        parse = job.stage("parse")
        runs = stage_runs(store, job_id, "parse")
        # the run that was busy at SIGTERM ended as a run ends, by handing over or finishing
        ended = [r for r in runs if r.run == running]
        assert ended and ended[0].kinds[-1] in ("continue", "done"), ended
        assert parse.attempts == 1, f"the stage was re-driven: {parse}"
        resumed = first_progress_after(store, job_id, "parse", termed_at)
        if resumed is not None:
            rec.resume_s.append(round(resumed - termed_at, 2))
        rec.recomputed.append(0)  # one attempt: every continuation started at the checkpoint the last one saved
        check_against_reference(store, settings, rec, job_id)
