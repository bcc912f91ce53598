"""Tier 2: the job pages over real HTTP and a real Redis: the login cookie's reach, CSRF, escaping, no secrets.

The browser tests (tests/e2e/test_job_page.py) watch the pages work; these check what a browser cannot show:
the raw HTML, the headers, which requests the cookie opens, and that the installed wheel carries the pages.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from pipeline.models import Issue, JobStatus
from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore
from tests.conftest import DEMO_REPO, ApiServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
API_KEY = "page-key-81c3e0"
HOSTILE = "<script>window.__pwned=1</script>"
SECRETS = ("tok-field-5e1a7c", "tok-url-93b2d4", "cb-pass-0d6f18")


class Markup(HTMLParser):
    """Every tag with its attributes, and the text inside <script> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.script_text.append(data)


def markup(html: str) -> Markup:
    parsed = Markup()
    parsed.feed(html)
    return parsed


def csrf_of(client: httpx.Client, page: str) -> str:
    """The page's form token (the same as the cookie it set)."""
    html = client.get(page).text
    values = [a.get("value") for tag, a in markup(html).tags if tag == "input" and a.get("name") == "csrf"]
    assert values and values[0], html
    return str(values[0])


def test_login_cookie_opens_reads_and_the_pages_forms_only(settings: Settings, store: JobStore,
                                                            api_factory: Callable[[Settings], ApiServer]) -> None:
    api = api_factory(settings.with_(api_keys=(API_KEY,)))
    keyed = {"X-API-Key": API_KEY}
    assert api.client.post("/jobs", headers=keyed, json={"task": "process-all", "source": str(DEMO_REPO),
                                                         "job_id": "p1"}).status_code == 202
    browser = httpx.Client(base_url=api.url, timeout=30)
    try:
        refused = browser.get("/ui/jobs/p1")
        assert refused.status_code == 303 and refused.headers["location"] == "/ui/login?next=/ui/jobs/p1"
        assert browser.get("/ui/static/job.js").status_code == 200  # a script is no secret
        assert browser.get("/jobs/p1").status_code == 401
        token = csrf_of(browser, "/ui/login?next=/ui/jobs/p1")
        assert browser.post("/ui/login", data={"key": API_KEY}).status_code == 403  # no CSRF token
        wrong = browser.post("/ui/login", data={"key": "guess", "csrf": token})
        assert wrong.status_code == 401 and "repobuild_key" not in browser.cookies
        elsewhere = browser.post("/ui/login", data={"key": API_KEY, "csrf": token, "next": "//evil.example/x"})
        assert elsewhere.status_code == 303 and elsewhere.headers["location"] == "/ui/jobs"  # never off-site
        ok = browser.post("/ui/login", data={"key": API_KEY, "csrf": token, "next": "/ui/jobs/p1"})
        assert ok.status_code == 303 and ok.headers["location"] == "/ui/jobs/p1"
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie

        assert browser.get("/ui/jobs/p1").status_code == 200
        assert browser.get("/jobs/p1").status_code == 200  # the page's script reads the job with the cookie
        assert browser.post("/jobs/p1/cancel").status_code == 401  # ... but the JSON API's writes need the header
        assert browser.post("/ui/jobs/p1/cancel").status_code == 403  # a form without its token
        assert browser.post("/ui/jobs/p1/cancel", data={"csrf": "forged"}).status_code == 403
        assert store.get("p1").status == JobStatus.QUEUED
        done = browser.post("/ui/jobs/p1/cancel", data={"csrf": token})
        assert done.status_code == 303 and done.headers["location"] == "/ui/jobs/p1"
        assert store.get("p1").status == JobStatus.CANCELLED
        again = browser.post("/ui/jobs/p1/cancel", data={"csrf": token})
        assert again.status_code == 409 and "already cancelled" in again.text

        assert browser.get("/ui/jobs/nope").status_code == 404
        assert browser.get("/ui/jobs/bad%20id").status_code == 400
        bad_filter = browser.get("/ui/jobs?status=sleeping")
        assert bad_filter.status_code == 400 and "status" in bad_filter.text
        assert browser.post("/ui/logout", data={"csrf": token}).status_code == 303
        assert browser.get("/ui/jobs").status_code == 303
    finally:
        browser.close()


def test_pages_escape_job_fields_and_show_no_secret(settings: Settings, store: JobStore,
                                                   api_factory: Callable[[Settings], ApiServer]) -> None:
    api = api_factory(settings)
    field_token, url_token, callback_password = SECRETS
    r = api.client.post("/jobs", json={
        "task": "process-all", "job_id": "h1", "token": field_token,
        "source": f"http://x-access-token:{url_token}@127.0.0.1:1/site.git",
        "callback_url": f"http://hook:{callback_password}@127.0.0.1:1/callback"})
    assert r.status_code == 202, r.text
    # What a failed job can carry that came from outside: error text, issue paths and messages, result URLs.
    store.add_issue("h1", Issue(stage="parse", path=f"posts/{HOSTILE}.md", message=f"title {HOSTILE}",
                                kind=f"kind{HOSTILE}"))
    store.set_job("h1", JobStatus.FAILED, error={"stage": "fetch", "message": f"boom {HOSTILE}", "attempts": 2},
                  result={"publishInfo": {"publicContentUrl": "javascript:window.__pwned=2",
                                          "publicPostsUrl": "https://static.example/p/h1/"}})

    for path in ("/ui/jobs/h1", "/ui/jobs", "/ui/jobs?status=failed"):
        page = api.client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert HOSTILE not in page.text and "<script>window" not in page.text
        found = markup(page.text)
        assert found.script_text == []  # no inline script ...
        assert all(a.get("src", "").startswith("/ui/static/") for tag, a in found.tags if tag == "script")
        assert not [(tag, a) for tag, a in found.tags if "style" in a or any(k.startswith("on") for k in a)]
        assert not any(s in page.text for s in SECRETS), path
    job_page = api.client.get("/ui/jobs/h1").text
    assert "boom &lt;script&gt;window.__pwned=1&lt;/script&gt;" in job_page
    assert "posts/&lt;script&gt;" in job_page and "title &lt;script&gt;" in job_page
    hrefs = [a.get("href") or "" for tag, a in markup(job_page).tags if tag == "a"]
    assert "https://static.example/p/h1/" in hrefs and not any(h.startswith("javascript") for h in hrefs)
    assert "127.0.0.1:1/site.git" in job_page  # the source is shown, without its credential
    listed = api.client.get("/ui/jobs?status=failed").text
    assert 'data-job="h1"' in listed and "boom &lt;script&gt;" in listed
    assert 'data-job="h1"' not in api.client.get("/ui/jobs?status=queued").text


def test_openapi_document_leaves_out_the_pages(settings: Settings,
                                               api_factory: Callable[[Settings], ApiServer]) -> None:
    paths = api_factory(settings).client.get("/openapi.json").json()["paths"]
    assert "/jobs/{job_id}" in paths and not [p for p in paths if p.startswith("/ui")]


def test_wheel_ships_the_pages(tmp_path: Path) -> None:
    # built from a copy, so setuptools' build/ folder never lands in the checkout (nor a stale one in the wheel)
    project = tmp_path / "project"
    for name in ("api", "worker", "pipeline"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, project / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path),
                            str(project)], capture_output=True, text=True, timeout=240)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("repobuild-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    pages = {p.relative_to(ROOT).as_posix() for folder in ("api/templates", "api/static")
             for p in (ROOT / folder).iterdir()}
    assert len(pages) >= 7 and pages <= shipped, pages - shipped
