"""Submit, retry and cancel jobs: the operations the API and the CLI share."""

from __future__ import annotations

import logging
import time

import redis
from kombu.exceptions import OperationalError

from pipeline.catalog import CALLBACK_PAYLOAD
from pipeline.errors import PermanentError
from pipeline.log_lines import add_log_fields
from pipeline.models import JobSpec, JobStatus, StageStatus
from pipeline.plans import NEEDS_PROJECT, NEEDS_SOURCE, NOTIFY, stages_for
from pipeline.stores.inputs import offload_large_options
from pipeline.stores.jobs import JobStore, JobView
from worker import metrics
from worker.chains import enqueue_from
from worker.held_messages import held_chain
from worker.repobuild_app import RepobuildCelery
from worker.stage_task import BATCH_TASK

log = logging.getLogger(__name__)
# Redis or the broker cannot be reached (the API answers 503 for these).
UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OperationalError)


class Conflict(Exception):
    """The job is not in a state that allows the operation."""


def submit(app: RepobuildCelery, spec: JobSpec, job_secrets: dict[str, str] | None = None) -> tuple[JobView, bool]:
    """Store the job and enqueue its first stage. Same id and body again → the existing job, not a new one.

    A task the service cannot run is still stored, then failed through the callback, as the original did.
    """
    store: JobStore = app.store
    add_log_fields(job_id=spec.job_id)  # what is logged about this submission (a request's access line) names it
    try:
        stages = stages_for(spec.task)
        if spec.task in NEEDS_SOURCE and spec.source is None:
            raise PermanentError(f"task {spec.task} needs a source (a path or a git URL)")
        if spec.task in NEEDS_PROJECT and not spec.project_id:
            raise PermanentError(f"task {spec.task} needs a projectId: it publishes to projects/<projectId>/")
        problem = None
    except PermanentError as exc:
        stages, problem = (NOTIFY,), str(exc)
    spec = offload_large_options(spec, app.artifacts)
    # the first stage's message goes with the job, in one step, where the store and the broker are one Redis
    send = held_chain(app, spec.job_id, list(stages)) if problem is None and app.sends_with_jobs else []
    job, created = store.create(spec, stages, job_secrets, send)
    if not created:
        return job, False
    metrics.JOBS_SUBMITTED.labels(spec.task).inc()
    if problem is not None:
        metrics.job_finished(spec.task, JobStatus.FAILED)
        store.set_job(spec.job_id, JobStatus.FAILED, finished_at=time.time(),
                      error={"stage": None, "message": problem, "attempts": 0, "type": "PermanentError"})
        store.event(spec.job_id, "failed", problem, level="error")
    if send:
        return job, True
    try:
        # the job as stored just now, not read again: a submission's round trips to Redis are its latency
        enqueue_from(app, spec.job_id, job=None if problem is not None else job)
    except UNAVAILABLE as exc:
        # Stored, but its message not sent: the job is accepted all the same, since the reconciler sends the
        # first stage of a stored job that has no message in flight once the broker is back. Answering 503
        # here would make a client without a job id of its own submit the same work twice (found by killing
        # Redis during a burst of submissions).
        log.warning("job %s stored, its first stage not sent (%s): the reconciler will send it", spec.job_id,
                    type(exc).__name__)
        return job, True
    return (store.get(spec.job_id) if problem is not None else job), True


def retry(app: RepobuildCelery, job_id: str) -> JobView:
    """Resume a failed or cancelled job from its first unfinished stage, keeping that stage's cursor."""
    store: JobStore = app.store
    job = store.get(job_id)
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise Conflict(f"job {job_id} is {job.status.value}; only failed or cancelled jobs can be retried")
    if job.error is not None and job.error.get("stage") is None and job.status == JobStatus.FAILED:
        raise Conflict(f"job {job_id} cannot run: {job.error.get('message')}")
    resumed = [state for state in job.stages if state.status != StageStatus.DONE or state.name == NOTIFY]
    for state in resumed:
        state.status = StageStatus.PENDING
        state.error = None
        store.put_stage(job_id, state)
    # The failure callback was delivered; the retried outcome gets a fresh payload.
    app.artifacts.delete_prefix(CALLBACK_PAYLOAD.key(job_id))
    store.set_job(job_id, JobStatus.QUEUED, error="", finished_at="")
    store.event(job_id, "retry-requested", "job retried by request")
    for state in resumed:
        _send_unfinished_batches_again(app, job_id, state.name)
    enqueue_from(app, job_id)
    return store.get(job_id)


def _send_unfinished_batches_again(app: RepobuildCelery, job_id: str, stage: str) -> None:
    """A fanned-out stage that failed because a batch did keeps its cursor (batches sent, some done). Its
    failure marks are dropped, or the resumed stage would find them and fail at once, and every batch sent but
    not done is sent again: the failed ones, and those whose messages were dropped while the job was failed.
    Batches already done are not: the retry costs only what was not finished."""
    batches = app.store.batches(job_id, stage)
    failed = batches.forget_failed()
    todo = sorted(set(batches.sent_at()) - batches.done())
    if not todo:
        return
    sent = batches.mark_sent(todo)
    for n in todo:
        app.tasks[BATCH_TASK].apply_async((job_id, stage, n), {"sent_at": sent})
    app.store.event(job_id, "resent", f"{stage}: sending {len(todo)} unfinished batch(es) again "
                    f"({len(failed)} had failed): {todo[:10]}", stage=stage)


def cancel(app: RepobuildCelery, job_id: str) -> JobView:
    """Stop a job: queued stages never start, the running one stops between batches."""
    store: JobStore = app.store
    job = store.get(job_id)
    if job.status.terminal:
        raise Conflict(f"job {job_id} is already {job.status.value}")
    store.set_job(job_id, JobStatus.CANCELLED, finished_at=time.time())
    metrics.job_finished(job.spec.task, JobStatus.CANCELLED)
    for state in job.stages:
        if state.name != NOTIFY and state.status in (StageStatus.PENDING, StageStatus.QUEUED):
            state.status = StageStatus.CANCELLED
            store.put_stage(job_id, state)
    store.event(job_id, "cancel-requested", "job cancelled by request")
    enqueue_from(app, job_id, NOTIFY)
    return store.get(job_id)
