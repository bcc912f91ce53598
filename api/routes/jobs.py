"""The native jobs API: submit, inspect, list, retry, cancel, follow events."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, request, stream_with_context, url_for
from pydantic import ValidationError

from api.extensions import celery_of, settings_of
from api.schemas import BadRequest, JobRequest, first_error, job_view
from pipeline.errors import PermanentError
from pipeline.models import JobSpec, JobStatus
from pipeline.plans import job_is_over, stages_for
from pipeline.stores.jobs import JobExists
from worker import submission

bp = Blueprint("jobs", __name__)
ISSUES_SHOWN = 200


def error(status: int, message: str, **extra: Any) -> Any:
    return jsonify(status="error", message=message, **extra), status


def body_json() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


@bp.errorhandler(BadRequest)
def _bad_request(exc: BadRequest) -> Any:
    return error(400, exc.message, field=exc.field)


def accept(spec: JobSpec, secrets: dict[str, str], body: dict[str, Any]) -> Any:
    """Store + enqueue; 202 for a new job, 200 for the same request again, 409 for a different one."""
    try:
        job, created = submission.submit(celery_of(), spec, secrets)
    except JobExists as exc:
        return error(409, str(exc), job_id=exc.job_id)
    status_url = url_for("jobs.get_job", job_id=job.spec.job_id, _external=True)
    return jsonify(job_id=job.spec.job_id, status=job.status.value, status_url=status_url, **body), (
        202 if created else 200)


@bp.post("/jobs")
def create_job() -> Any:
    try:
        req = JobRequest.model_validate(body_json(), context={"settings": settings_of()})
    except ValidationError as exc:
        raise first_error(exc) from None
    try:
        stages_for(req.task)
    except PermanentError as exc:
        raise BadRequest(str(exc), "task") from None
    spec, secrets = req.to_spec()
    return accept(spec, secrets, {})


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> Any:
    store = celery_of().store
    try:
        job = store.get(job_id)
    except KeyError:
        return error(404, f"job {job_id} not found")
    return jsonify(job_view(job, store.issues(job_id)[:ISSUES_SHOWN], store.issue_count(job_id)))


@bp.get("/jobs")
def list_jobs() -> Any:
    raw = request.args.get("status")
    try:
        status = JobStatus(raw) if raw else None
    except ValueError:
        raise BadRequest(f"status must be one of {', '.join(s.value for s in JobStatus)}", "status") from None
    limit = min(int(request.args.get("limit", "100")), 1000)
    jobs = celery_of().store.list_jobs(status, limit)
    return jsonify(jobs=[{"job_id": j.spec.job_id, "task": j.spec.task, "status": j.status.value,
                          "created_at": j.created_at, "error": j.error} for j in jobs])


@bp.post("/jobs/<job_id>/retry")
def retry_job(job_id: str) -> Any:
    return _transition(job_id, submission.retry)


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Any:
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
def job_events(job_id: str) -> Any:
    store = celery_of().store
    if not store.exists(job_id):
        return error(404, f"job {job_id} not found")
    last = request.headers.get("Last-Event-ID") or request.args.get("after") or "0-0"

    def stream() -> Iterator[str]:
        after, idle_since = last, time.monotonic()
        while True:
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
