"""A project's live revision in the bucket, and rollback to an earlier one."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from api.extensions import settings_of
from api.openapi import endpoint
from api.responses import ProjectLatest
from api.route_requests import ProjectPath, RollbackRequest
from pipeline.errors import PermanentError, TransientError
from pipeline.targets import projects

bp = Blueprint("projects", __name__)
TAGS = ("projects",)


def _error(exc: Exception) -> Any:
    if isinstance(exc, TransientError):
        return jsonify(status="error", message=f"storage unavailable: {exc}"), 503
    return jsonify(status="error", message=str(exc)), 404 if isinstance(exc, projects.NoSuchRevision) else 400


@bp.get("/projects/<project_id>")
@endpoint(path=ProjectPath, ok={200: ProjectLatest}, errors=(404, 503), tags=TAGS)
def show(project_id: str) -> Any:
    """The project's live revision: its `latest.json` in the bucket."""
    try:
        pointer = projects.latest(settings_of(), project_id)
    except (PermanentError, TransientError) as exc:
        return _error(exc)
    if pointer is None:
        return jsonify(status="error", message=f"project {project_id} has no published revision"), 404
    return jsonify(project_id=project_id, latest=pointer)


@bp.post("/projects/<project_id>/rollback")
@endpoint(path=ProjectPath, body=RollbackRequest, ok={200: ProjectLatest}, errors=(404, 503), tags=TAGS)
def rollback(project_id: str, body: RollbackRequest) -> Any:
    """Point the project back to an earlier complete revision (404 when it has none by that id)."""
    try:
        pointer = projects.rollback(settings_of(), project_id, body.rev)
    except (PermanentError, TransientError) as exc:
        return _error(exc)
    return jsonify(project_id=project_id, latest=pointer)
