"""Flask app factory: a thin HTTP layer over worker.submission and the job store."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Any

import redis
from flask import Flask, current_app, jsonify, request
from kombu.exceptions import OperationalError

from pipeline.settings import Settings
from worker.celery_app import RepobuildCelery, create_celery

UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OperationalError)
OPEN_PATHS = {"/", "/health", "/ready"}


def celery_of(app: Flask | None = None) -> RepobuildCelery:
    return (app or current_app).extensions["repobuild.celery"]  # type: ignore[no-any-return]


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask("repobuild")
    app.config["MAX_CONTENT_LENGTH"] = 50 * 1024 * 1024  # the original's body limit
    app.extensions["repobuild.settings"] = settings
    app.extensions["repobuild.celery"] = create_celery(settings)

    from api.routes_health import bp as health_bp  # noqa: PLC0415
    from api.routes_inference import bp as inference_bp  # noqa: PLC0415
    from api.routes_jobs import bp as jobs_bp  # noqa: PLC0415
    from api.routes_process import bp as process_bp  # noqa: PLC0415
    from api.routes_projects import bp as projects_bp  # noqa: PLC0415

    app.register_blueprint(health_bp)
    app.register_blueprint(jobs_bp)
    app.register_blueprint(process_bp)
    app.register_blueprint(inference_bp)
    app.register_blueprint(projects_bp)

    @app.before_request
    def _auth() -> Any:
        if not settings.api_keys or request.path in OPEN_PATHS:
            return None
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else request.headers.get("X-API-Key", "")
        if any(hmac.compare_digest(given.encode(), k.encode()) for k in settings.api_keys):
            return None
        return jsonify(status="error", message="missing or invalid API key"), 401

    @app.errorhandler(413)
    def _too_large(_: Any) -> Any:
        return jsonify(status="error", message="request body is larger than 50 MB"), 413

    @app.errorhandler(404)
    def _not_found(_: Any) -> Any:
        return jsonify(status="error", message=f"no route {request.method} {request.path}"), 404

    @app.errorhandler(405)
    def _bad_method(_: Any) -> Any:
        return jsonify(status="error", message=f"method {request.method} not allowed on {request.path}"), 405

    for exc_type in UNAVAILABLE:
        app.register_error_handler(exc_type, _unavailable)
    return app


def _unavailable(exc: Exception) -> Any:
    return jsonify(status="error", message=f"job store unavailable: {type(exc).__name__}"), 503
