"""The original service's `POST /process`, same body and answers (202 instead of 200)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from pydantic import ValidationError

from api.extensions import celery_of, settings_of
from api.schemas import MISSING_FIELDS, ProcessRequest, first_error
from pipeline.stores.jobs import JobExists
from worker import submission

bp = Blueprint("process", __name__)


@bp.post("/process")
def process() -> Any:
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not all(body.get(k) for k in ("jobId", "task", "callbackUrl")):
        return jsonify(status="error", message=MISSING_FIELDS), 400
    try:
        req = ProcessRequest.model_validate(body, context={"settings": settings_of()})
    except ValidationError as exc:
        bad = first_error(exc)
        return jsonify(status="error", message=bad.message, field=bad.field), 400
    spec, secrets = req.to_spec()
    try:
        job, created = submission.submit(celery_of(), spec, secrets)
    except JobExists as exc:
        return jsonify(status="error", message=str(exc), jobId=exc.job_id), 409
    return jsonify(status="accepted", jobId=job.spec.job_id), (202 if created else 200)
