"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from api.extensions import UNAVAILABLE, celery_of
from pipeline.timestamps import now_iso

bp = Blueprint("health", __name__)


@bp.get("/")
@bp.get("/health")
def health() -> Any:
    return jsonify(status="healthy", timestamp=now_iso())


@bp.get("/ready")
def ready() -> Any:
    try:
        celery_of().store.ping()
    except UNAVAILABLE as exc:
        return jsonify(status="unavailable", message=f"redis unreachable: {type(exc).__name__}",
                       timestamp=now_iso()), 503
    return jsonify(status="ready", timestamp=now_iso())
