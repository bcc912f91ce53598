"""Plan → Celery chain. A job (re)starts at its first unfinished stage; the chain carries the rest."""

from __future__ import annotations

import time
from typing import Any

from celery import chain

from pipeline.models import StageStatus
from pipeline.stores.jobs import JobStore, JobView
from worker.repobuild_app import RepobuildCelery


def enqueue_from(app: RepobuildCelery, job_id: str, start: str | None = None, job: JobView | None = None) -> str | None:
    """Send the chain of `job_id`'s stages from `start` (default: the first not done). Returns that stage.

    `job`: the job as the caller has just read or written it, to save a read; its start stage is updated in place.
    """
    store: JobStore = app.store
    job = job or store.get(job_id)
    names = [s.name for s in job.stages]
    if start is None:
        first = job.next_stage()
        if first is None:
            return None
        start = first.name
    todo = names[names.index(start):]
    now = time.time()
    state = job.stage(start)
    if state.status != StageStatus.DONE:
        state.status = StageStatus.QUEUED
        state.enqueued_at = now
        store.put_stage(job_id, state)
    sigs: list[Any] = [app.tasks[f"repobuild.{name}"].si(job_id) for name in todo]
    chain(*sigs).apply_async()
    return start
