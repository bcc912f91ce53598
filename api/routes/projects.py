"""A project's live revision in the bucket, and rollback to an earlier one."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from api.extensions import settings_of
from pipeline.errors import PermanentError, TransientError
from pipeline.targets import projects

bp = Blueprint("projects", __name__)


def _error(exc: Exception) -> Any:
    if isinstance(exc, TransientError):
        return jsonify(status="error", message=f"storage unavailable: {exc}"), 503
    return jsonify(status="error", message=str(exc)), 404 if isinstance(exc, projects.NoSuchRevision) else 400


@bp.get("/projects/<project_id>")
def show(project_id: str) -> Any:
    try:
        pointer = projects.latest(settings_of(), project_id)
    except (PermanentError, TransientError) as exc:
        return _error(exc)
    if pointer is None:
        return jsonify(status="error", message=f"project {project_id} has no published revision"), 404
    return jsonify(project_id=project_id, latest=pointer)


@bp.post("/projects/<project_id>/rollback")
def rollback(project_id: str) -> Any:
    body = request.get_json(silent=True) or {}
    rev = body.get("rev") or body.get("revision")
    if not isinstance(rev, str) or not rev:
        return jsonify(status="error", message="body must name the revision: {\"rev\": \"<job id>\"}"), 400
    try:
        pointer = projects.rollback(settings_of(), project_id, rev)
    except (PermanentError, TransientError) as exc:
        return _error(exc)
    return jsonify(project_id=project_id, latest=pointer)
