"""Flask app factory: a thin HTTP layer over worker.submission and the job store."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed, NotFound, RequestEntityTooLarge

from api.auth import refuse_without_key
from api.extensions import SETTINGS_KEY, UNAVAILABLE, set_celery
from api.routes.health import bp as health_bp
from api.routes.inference import bp as inference_bp
from api.routes.jobs import bp as jobs_bp
from api.routes.metrics import bp as metrics_bp
from api.routes.openapi import bp as openapi_bp
from api.routes.process import bp as process_bp
from api.routes.projects import bp as projects_bp
from api.routes.ui import bp as ui_bp
from api.schemas import BadRequest
from pipeline.http.credentials import keep_credentials_out_of_logs
from pipeline.log_lines import log_to_stderr, start_log_context
from pipeline.settings import Settings
from worker.factory import create_celery


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    keep_credentials_out_of_logs()  # the inference API fetches imageUrl with httpx, which logs the URL
    log_to_stderr(settings.log_format)
    app = Flask("repobuild")
    app.config["MAX_CONTENT_LENGTH"] = 50 * 1024 * 1024  # the original's body limit
    app.extensions[SETTINGS_KEY] = settings
    set_celery(app, create_celery(settings))

    for bp in (health_bp, jobs_bp, process_bp, inference_bp, projects_bp, openapi_bp, ui_bp, metrics_bp):
        app.register_blueprint(bp)

    @app.before_request
    def _log_context() -> None:
        # A request about one job (/jobs/<job_id>/...) logs its lines with that job's id; a fresh context for
        # each request, since a server thread serves one request after another.
        start_log_context(job_id=(request.view_args or {}).get("job_id"))

    app.before_request(lambda: refuse_without_key(settings))

    app.register_error_handler(BadRequest, _bad_request)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(InternalServerError, _internal_error)
    for exc_type in UNAVAILABLE:
        app.register_error_handler(exc_type, _unavailable)
    return app


def _bad_request(exc: BadRequest) -> Any:
    extra = {"field": exc.field} if exc.field else {}
    return jsonify(status="error", message=exc.message, **extra), 400


def _http_error(exc: HTTPException) -> Any:
    """Every HTTP error werkzeug raises, as the JSON error shape (never its HTML page)."""
    if isinstance(exc, RequestEntityTooLarge):
        message = "request body is larger than 50 MB"
    elif isinstance(exc, NotFound):
        message = f"no route {request.method} {request.path}"
    elif isinstance(exc, MethodNotAllowed):
        message = f"method {request.method} not allowed on {request.path}"
    else:
        message = exc.description or exc.name
    headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]  # e.g. Allow on a 405
    return jsonify(status="error", message=message), exc.code or 500, headers


def _internal_error(exc: InternalServerError) -> Any:
    # Flask has logged the original exception with its traceback; the caller gets an id to quote, nothing of it.
    reference = uuid.uuid4().hex[:12]
    original = exc.original_exception
    if original is not None:
        current_app.logger.error("internal error %s: %s", reference, type(original).__name__)
    return jsonify(status="error", message=f"internal error (reference {reference})"), 500


def _unavailable(exc: Exception) -> Any:
    return jsonify(status="error", message=f"job store unavailable: {type(exc).__name__}"), 503
