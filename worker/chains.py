"""Plan → Celery chain. A job (re)starts at its first unfinished stage; the chain carries the rest."""

from __future__ import annotations

import time
from typing import Any

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
    send_chain(app, job_id, todo)
    return start


def send_chain(app: RepobuildCelery, job_id: str, stages: list[str], producer: Any = None) -> None:
    """Send the chain of `stages` for `job_id`, on `producer` if given (else one of the app's pool)."""
    sigs: list[Any] = [app.tasks[f"repobuild.{name}"].si(job_id) for name in stages]
    # The message chain(*sigs).apply_async() sends (Celery's protocol-2 chain: the first stage's message carries
    # the rest, last first, and each task sends the next when it succeeds), without the canvas freezing every
    # step first (a task id and a result object each): over a third of the CPU of sending a new job's chain.
    # A later stage gets its task id when it is sent, as any task does.
    sigs[0].apply_async(chain=sigs[:0:-1], producer=producer)
