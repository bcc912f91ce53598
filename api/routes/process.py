"""The original service's `POST /process`, same body and answers (202 instead of 200)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from api.extensions import celery_of, settings_of
from api.openapi import endpoint
from api.responses import ProcessAccepted, ProcessConflict
from api.schemas import ProcessRequest, TaskUnion
from pipeline.stores.jobs import JobExists
from worker import submission

bp = Blueprint("process", __name__)


@bp.post("/process")
@endpoint(body=ProcessRequest, ok={202: ProcessAccepted, 200: ProcessAccepted}, errors=(409, 503),
          conflict=ProcessConflict, tags=("original",))
def process(body: TaskUnion) -> Any:
    """Submit a job with the original service's body.

    A task not known here is accepted and fails through the callback with `Unknown task type: X`, as the
    original did. The same `jobId` with the same body again answers 200; with another body, 409.
    """
    body.refuse_server_paths(settings_of())
    body.refuse_outbound(settings_of())
    spec, secrets = body.to_spec()
    try:
        job, created = submission.submit(celery_of(), spec, secrets)
    except JobExists as exc:
        return jsonify(status="error", message=str(exc), jobId=exc.job_id), 409
    return jsonify(status="accepted", jobId=job.spec.job_id), (202 if created else 200)
