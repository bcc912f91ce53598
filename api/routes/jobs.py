"""The native jobs API: submit, inspect, list, retry, cancel, follow events."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, stream_with_context, url_for

from api.extensions import celery_of, settings_of
from api.openapi import endpoint
from api.responses import JobAccepted, JobBody, JobList, JobTransition, job_view
from api.route_requests import EventsHeaders, EventsQuery, JobListQuery, JobPath
from api.schemas import JobRequest, TaskUnion
from pipeline.models import JobSpec
from pipeline.plans import job_is_over
from pipeline.stores.jobs import JobExists
from worker import submission

bp = Blueprint("jobs", __name__)
ISSUES_SHOWN = 200
LIST_MAX = 1000
TAGS = ("jobs",)


def error(status: int, message: str, **extra: Any) -> Any:
    return jsonify(status="error", message=message, **extra), status


def accept(spec: JobSpec, secrets: dict[str, str]) -> Any:
    """Store + enqueue; 202 for a new job, 200 for the same request again, 409 for a different one."""
    try:
        job, created = submission.submit(celery_of(), spec, secrets)
    except JobExists as exc:
        return error(409, str(exc), job_id=exc.job_id)
    status_url = url_for("jobs.get_job", job_id=job.spec.job_id, _external=True)
    return jsonify(job_id=job.spec.job_id, status=job.status.value, status_url=status_url), (202 if created else 200)


@bp.post("/jobs")
@endpoint(body=JobRequest, ok={202: JobAccepted, 200: JobAccepted}, errors=(409, 503), tags=TAGS)
def create_job(body: TaskUnion) -> Any:
    """Submit a job.

    The same `job_id` with the same body again answers 200 with the existing job; with another body, 409.
    """
    body.refuse_server_paths(settings_of())
    body.refuse_outbound(settings_of())
    spec, secrets = body.to_spec()
    return accept(spec, secrets)


@bp.get("/jobs/<job_id>")
@endpoint(path=JobPath, ok={200: JobBody}, errors=(404, 503), tags=TAGS)
def get_job(job_id: str) -> Any:
    """A job: its status, its stages (progress, attempts, cursor, timings, error), its first issues."""
    store = celery_of().store
    try:
        job = store.get(job_id)
    except KeyError:
        return error(404, f"job {job_id} not found")
    return jsonify(job_view(job, store.issues(job_id)[:ISSUES_SHOWN], store.issue_count(job_id)))


@bp.get("/jobs")
@endpoint(query=JobListQuery, ok={200: JobList}, errors=(503,), tags=TAGS)
def list_jobs(query: JobListQuery) -> Any:
    """The newest jobs, of one status or all."""
    jobs = celery_of().store.list_jobs(query.status, min(query.limit, LIST_MAX))
    return jsonify(jobs=[{"job_id": j.spec.job_id, "task": j.spec.task, "status": j.status.value,
                          "created_at": j.created_at, "error": j.error} for j in jobs])


@bp.post("/jobs/<job_id>/retry")
@endpoint(path=JobPath, ok={202: JobTransition}, errors=(404, 409, 503), tags=TAGS)
def retry_job(job_id: str) -> Any:
    """Resume a failed or cancelled job from the cursor of its first unfinished stage."""
    return _transition(job_id, submission.retry)


@bp.post("/jobs/<job_id>/cancel")
@endpoint(path=JobPath, ok={202: JobTransition}, errors=(404, 409, 503), tags=TAGS)
def cancel_job(job_id: str) -> Any:
    """Stop a job: queued stages never start, the running one stops between batches."""
    return _transition(job_id, submission.cancel)


def _transition(job_id: str, op: Any) -> Any:
    try:
        job = op(celery_of(), job_id)
    except KeyError:
        return error(404, f"job {job_id} not found")
    except submission.Conflict as exc:
        return error(409, str(exc))
    return jsonify(job_id=job_id, status=job.status.value), 202


@bp.get("/jobs/<job_id>/events")
@endpoint(path=JobPath, query=EventsQuery, headers=EventsHeaders, ok={200: None}, errors=(404, 503), tags=TAGS)
def job_events(job_id: str, query: EventsQuery, headers: EventsHeaders) -> Any:
    """The job's events as a server-sent event stream (`text/event-stream`), ending with `event: end`.

    A stream open longer than REPOBUILD_EVENTS_STREAM_MAX_S ends without `end`; EventSource then reconnects
    with `Last-Event-ID` and misses nothing.
    """
    store = celery_of().store
    if not store.exists(job_id):
        return error(404, f"job {job_id} not found")
    last = headers.last_event_id or query.after or "0-0"
    deadline = time.monotonic() + settings_of().events_stream_max_s

    def stream() -> Iterator[str]:
        after, idle_since = last, time.monotonic()
        while time.monotonic() < deadline:
            got = False
            for event_id, fields in store.follow_events(job_id, after, block_ms=1000):
                after, got = event_id, True
                yield f"id: {event_id}\nevent: {fields.get('type', 'message')}\ndata: {json.dumps(fields)}\n\n"
            if got:
                idle_since = time.monotonic()
                continue
            job = store.get(job_id)
            if job_is_over(job):
                yield f"event: end\ndata: {json.dumps({'status': job.status.value})}\n\n"
                return
            if time.monotonic() - idle_since > 15:
                idle_since = time.monotonic()
                yield ": keep-alive\n\n"

    return Response(stream_with_context(stream()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
