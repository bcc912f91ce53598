"""Flask app factory: a thin HTTP layer over worker.submission and the job store."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Flask, jsonify, request

from api.extensions import SETTINGS_KEY, UNAVAILABLE, set_celery
from api.routes.health import bp as health_bp
from api.routes.inference import bp as inference_bp
from api.routes.jobs import bp as jobs_bp
from api.routes.process import bp as process_bp
from api.routes.projects import bp as projects_bp
from pipeline.http.credentials import keep_credentials_out_of_logs
from pipeline.settings import Settings
from worker.factory import create_celery

OPEN_PATHS = {"/", "/health", "/ready"}


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    keep_credentials_out_of_logs()  # the inference API fetches imageUrl with httpx, which logs the URL
    app = Flask("repobuild")
    app.config["MAX_CONTENT_LENGTH"] = 50 * 1024 * 1024  # the original's body limit
    app.extensions[SETTINGS_KEY] = settings
    set_celery(app, create_celery(settings))


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
