"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from api.extensions import UNAVAILABLE, celery_of
from api.openapi import endpoint
from api.responses import Health, Readiness
from pipeline.timestamps import now_iso

bp = Blueprint("health", __name__)
TAGS = ("health",)


@bp.get("/")
@bp.get("/health")
@endpoint(ok={200: Health}, public=True, tags=TAGS)
def health() -> Any:
    """Liveness: the API answers."""
    return jsonify(status="healthy", timestamp=now_iso())


@bp.get("/ready")
@endpoint(ok={200: Readiness, 503: Readiness}, public=True, tags=TAGS)
def ready() -> Any:
    """Readiness: 503 while Redis cannot be reached."""
    try:
        celery_of().store.ping()
    except UNAVAILABLE as exc:
        return jsonify(status="unavailable", message=f"redis unreachable: {type(exc).__name__}",
                       timestamp=now_iso()), 503
    return jsonify(status="ready", timestamp=now_iso())
