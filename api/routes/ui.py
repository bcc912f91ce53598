"""The job pages: recent jobs by status, one job's stages live, retry and cancel, and the login that gates them.

Server-rendered with Jinja (autoescaped: job fields are hostile text) and one static script, no inline script or
style, under a Content-Security-Policy of 'self' only. Not in the OpenAPI document: these answer HTML to a
browser, and every fact they show is already documented under `/jobs`.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, g, redirect, render_template, request

from api.auth import KEY_COOKIE, UI_PREFIX, key_is_valid
from api.extensions import celery_of, settings_of
from api.job_page import CANCELLABLE, RETRYABLE, issue_groups, result_links, stage_rate
from api.openapi import parsed
from api.responses import job_view
from api.route_requests import JobListQuery, JobPath
from api.schemas import BadRequest
from pipeline.models import JobStatus
from pipeline.plans import job_is_over
from worker import submission
from worker.repobuild_app import RepobuildCelery

HERE = Path(__file__).resolve().parent.parent
bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder=str(HERE / "templates"),
               static_folder=str(HERE / "static"), static_url_path="/static")
CSRF_COOKIE = "repobuild_csrf"
ISSUES_SHOWN = 200
LIST_SHOWN = 100
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


@bp.after_request
def _headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"
    if resp.mimetype == "text/html":
        resp.headers["Cache-Control"] = "no-store"
    if CSRF_COOKIE not in request.cookies:
        resp.set_cookie(CSRF_COOKIE, _csrf_token(), httponly=True, samesite="Strict", secure=request.is_secure,
                        path=UI_PREFIX)
    return resp


def _csrf_token() -> str:
    """Double-submit: the forms carry the value of a cookie another site can neither read nor set."""
    if CSRF_COOKIE in request.cookies:
        return request.cookies[CSRF_COOKIE]
    if "csrf" not in g:  # a first visit: the form and the cookie set with this answer get the same new token
        g.csrf = secrets.token_urlsafe(24)
    return str(g.csrf)


def _csrf_ok() -> bool:
    cookie, sent = request.cookies.get(CSRF_COOKIE, ""), request.form.get("csrf", "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), sent.encode())


def _page(template: str, status: int = 200, **context: Any) -> Any:
    keys = settings_of().api_keys
    logged_in = bool(keys) and key_is_valid(request.cookies.get(KEY_COOKIE, ""), keys)
    return render_template(template, csrf=_csrf_token(), logged_in=logged_in, **context), status


def _problem(status: int, message: str) -> Any:
    return _page("problem.html", status, message=message)


@bp.app_template_filter("iso")
def _iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if ts else ""


@bp.errorhandler(BadRequest)
def _bad_request(exc: BadRequest) -> Any:
    return _problem(400, exc.message)  # the message names the field already


@bp.get("/jobs")
def jobs() -> Any:
    query = parsed(JobListQuery, request.args.to_dict())
    listed = celery_of().store.list_jobs(query.status, min(query.limit, LIST_SHOWN))
    return _page("jobs.html", jobs=listed, chosen=query.status.value if query.status else "",
                 statuses=[s.value for s in JobStatus])


@bp.get("/jobs/<job_id>")
def job(job_id: str) -> Any:
    return _job_page(parsed(JobPath, {"job_id": job_id}).job_id)


def _job_page(job_id: str, status: int = 200, notice: str | None = None) -> Any:
    store = celery_of().store
    # The last event id before the state is read: the page's stream starts after it and so misses nothing.
    seen = store.events(job_id)
    try:
        found = store.get(job_id)
    except KeyError:
        return _problem(404, f"job {job_id} not found")
    view = job_view(found, store.issues(job_id)[:ISSUES_SHOWN], store.issue_count(job_id))
    now = datetime.now(UTC)
    links, bundle_folder = result_links(view)
    return _page("job.html", status, job=view, notice=notice, live=not job_is_over(found),
                 after=seen[-1][0] if seen else "0-0", rates={s["name"]: stage_rate(s, now) for s in view["stages"]},
                 groups=issue_groups(view["issues"]), links=links, bundle_folder=bundle_folder,
                 can_retry=view["status"] in RETRYABLE, can_cancel=view["status"] in CANCELLABLE)


@bp.post("/jobs/<job_id>/retry")
def retry(job_id: str) -> Any:
    return _transition(job_id, submission.retry)


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> Any:
    return _transition(job_id, submission.cancel)


def _transition(job_id: str, op: Callable[[RepobuildCelery, str], object]) -> Any:
    job_id = parsed(JobPath, {"job_id": job_id}).job_id
    if not _csrf_ok():
        return _problem(403, "the form is stale or came from another site; reload the page and try again")
    try:
        op(celery_of(), job_id)
    except KeyError:
        return _problem(404, f"job {job_id} not found")
    except submission.Conflict as exc:
        return _job_page(job_id, 409, notice=str(exc))
    return redirect(f"/ui/jobs/{job_id}", code=303)


@bp.get("/login")
def login() -> Any:
    if not settings_of().api_keys:
        return redirect("/ui/jobs", code=303)
    return _page("login.html", next=_next_page())


@bp.post("/login")
def login_with_key() -> Any:
    settings = settings_of()
    if not settings.api_keys:
        return redirect("/ui/jobs", code=303)
    if not _csrf_ok():
        return _problem(403, "the form is stale or came from another site; reload the page and try again")
    key = request.form.get("key", "")
    if not key_is_valid(key, settings.api_keys):
        return _page("login.html", 401, next=_next_page(), notice="that key is not one of this service's API keys")
    resp = redirect(_next_page(), code=303)
    resp.set_cookie(KEY_COOKIE, key, httponly=True, samesite="Strict", secure=request.is_secure, path="/")
    return resp


@bp.post("/logout")
def logout() -> Any:
    if not _csrf_ok():
        return _problem(403, "the form is stale or came from another site; reload the page and try again")
    resp = redirect("/ui/login" if settings_of().api_keys else "/ui/jobs", code=303)
    resp.delete_cookie(KEY_COOKIE, path="/")
    return resp


def _next_page() -> str:
    """Where to go after logging in: a page of ours only (never `//host` or another site)."""
    wanted = request.values.get("next", "")
    return wanted if wanted.startswith(UI_PREFIX) and "\\" not in wanted else "/ui/jobs"
