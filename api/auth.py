"""Who may call the API: an API key in a header, or, for a browser on the job pages, in the login cookie.

A browser cannot put a header on a page load or on an EventSource, so the job pages' login form (api/routes/ui.py)
stores the key in an HttpOnly, SameSite=Strict cookie. The cookie counts for reads anywhere (the pages fetch
`/jobs/<id>` and its events) and for the pages' own forms under /ui/, which carry a CSRF token besides; it never
counts for a POST to the JSON API, so no other site can make a browser act there with it.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from flask import Request, jsonify, redirect, request

from pipeline.settings import Settings

KEY_COOKIE = "repobuild_key"
UI_PREFIX = "/ui/"
# the login form, and logging out (which only drops the cookie), need no key
OPEN_PATHS = {"/", "/health", "/ready", "/openapi.json", "/metrics", "/ui/login", "/ui/logout"}
OPEN_PREFIXES = ("/ui/static/",)
READS = {"GET", "HEAD"}


def key_is_valid(given: str, keys: Iterable[str]) -> bool:
    return bool(given) and any(hmac.compare_digest(given.encode(), k.encode()) for k in keys)


def given_key(req: Request) -> str:
    header = req.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:]
    if "X-API-Key" in req.headers:
        return req.headers["X-API-Key"]
    if req.method in READS or req.path.startswith(UI_PREFIX):
        return req.cookies.get(KEY_COOKIE, "")
    return ""


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def refuse_without_key(settings: Settings) -> Any:
    """None when the request may go on; else the refusal: the login page for a page load, 401 for the rest."""
    if not settings.api_keys or is_open(request.path) or key_is_valid(given_key(request), settings.api_keys):
        return None
    if request.path.startswith(UI_PREFIX) and request.method in READS:
        return redirect(f"/ui/login?next={quote(request.full_path.rstrip('?'), safe='/')}", code=303)
    return jsonify(status="error", message="missing or invalid API key"), 401
