"""Tier 3: the job page in real headless Chromium, on a real API server, worker and Redis.

The page is loaded while the job waits for a worker, then a worker starts: the page must follow the job to
`completed` from its events stream alone (no reload), show hostile file names as text, raise no console
error (a script the Content-Security-Policy blocked would be one), and its buttons must retry and cancel.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore
from tests.conftest import DEMO_REPO, ApiServer, Workers, wait_job
from tests.e2e.browser import chromium

pytestmark = pytest.mark.e2e

API_KEY = "ui-key-4f2a9c"
# Post and image names a page must show as text: as markup they would set window.__pwned.
HOSTILE_POST = "<img src=x onerror=window.__pwned=1>.md"
HOSTILE_IMAGE = "<svg onload=window.__pwned=2>.png"
STATUS_IS = "s => document.getElementById('job-status').textContent === s"
# Every status the page's badge shows, in order, recorded in the page as it changes.
RECORD_STATUSES = """() => {
  window.__seen = [document.getElementById('job-status').textContent];
  new MutationObserver(() => window.__seen.push(document.getElementById('job-status').textContent))
    .observe(document.getElementById('job-status'), {childList: true, characterData: true, subtree: true});
}"""


def hostile_repo(root: Path) -> Path:
    shutil.copytree(DEMO_REPO, root)
    (root / HOSTILE_POST).write_text("---\ntitle: [never closed\n---\nA post whose frontmatter is broken.\n")
    (root / HOSTILE_IMAGE).write_bytes(b"not an image at all")
    (root / "welcome.md").write_text((root / "welcome.md").read_text() + f"\n![broken]({HOSTILE_IMAGE})\n")
    return root


def test_job_page_follows_a_job_live(settings: Settings, workers: Workers, store: JobStore, tmp_path: Path,
                                     api_factory: Callable[[Settings], ApiServer]) -> None:
    settings = settings.with_(api_keys=(API_KEY,))
    api = api_factory(settings)
    source = hostile_repo(tmp_path / "hostile-site")
    r = api.client.post("/jobs", headers={"X-API-Key": API_KEY},
                        json={"task": "process-all", "source": str(source), "job_id": "live-1"})
    assert r.status_code == 202, r.text
    with chromium(tmp_path / "profile") as browser:
        page = browser.page
        page.goto(f"{api.url}/ui/jobs/live-1")
        assert page.url.startswith(f"{api.url}/ui/login?next=")  # the service has keys: log in first
        page.fill("input[name=key]", API_KEY)
        with page.expect_navigation():
            page.click("form.login button[type=submit]")
        assert page.url == f"{api.url}/ui/jobs/live-1"
        assert page.text_content("#job-status") == "queued"
        page.evaluate("window.__marker = 'the same document'")
        page.evaluate(RECORD_STATUSES)

        workers.start(settings)  # only now can the job run
        page.wait_for_function(STATUS_IS, arg="completed", timeout=180_000)
        page.wait_for_selector("#live-note", state="hidden", timeout=60_000)  # the stream said `end`
        assert page.evaluate("window.__marker") == "the same document", "the page was reloaded"
        seen = page.evaluate("window.__seen")
        assert seen[0] == "queued" and seen[-1] == "completed" and "running" in seen, seen
        assert wait_job(store, "live-1").status == JobStatus.COMPLETED
        stage_names = [s.name for s in store.get("live-1").stages]
        assert page.locator("li.stage").evaluate_all("els => els.map(e => e.dataset.stage)") == stage_names
        assert set(page.locator(".stage-status").all_text_contents()) == {"done"}
        bars = page.locator("li.stage[data-stage=parse] .stage-progress")
        assert bars.evaluate("b => b.value === b.max && b.max > 1"), bars.evaluate("b => [b.value, b.max]")
        assert page.locator("#bundle-path").text_content() == str(Path(settings.output) / "live-1")
        drawn_live = page.locator(".issue-path").all_text_contents()
        assert HOSTILE_POST in drawn_live and HOSTILE_IMAGE in drawn_live, drawn_live
        kinds = page.locator(".issue-group").evaluate_all("els => els.map(e => e.dataset.kind)")
        assert len(kinds) == len(set(kinds)) and "parse-error" in kinds, kinds
        assert page.evaluate("typeof window.__pwned") == "undefined"
        browser.screenshot(tmp_path / "job-page.png")

        answer = page.reload()  # the server's own rendering of the same hostile names
        assert answer is not None
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert page.locator(".issue-path").all_text_contents() == drawn_live
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.locator("#live-note").is_hidden()
    assert browser.errors == []


def test_job_page_buttons_and_status_filter(settings: Settings, workers: Workers, store: JobStore, tmp_path: Path,
                                            api_factory: Callable[[Settings], ApiServer]) -> None:
    api = api_factory(settings)
    missing = tmp_path / "not-yet"
    api.client.post("/jobs", json={"task": "process-all", "source": str(DEMO_REPO), "job_id": "waiting"})
    with chromium(tmp_path / "profile") as browser:
        page = browser.page
        page.goto(f"{api.url}/ui/jobs/waiting")
        assert page.is_hidden("#retry") and page.is_visible("#cancel")
        with page.expect_navigation():
            page.click("#cancel")
        assert page.text_content("#job-status") == "cancelled"
        assert store.get("waiting").status == JobStatus.CANCELLED
        assert page.is_visible("#retry") and page.is_hidden("#cancel")

        workers.start(settings)
        api.client.post("/jobs", json={"task": "process-all", "source": str(missing), "job_id": "broken"})
        page.goto(f"{api.url}/ui/jobs/broken")
        page.wait_for_function(STATUS_IS, arg="failed", timeout=120_000)
        assert page.is_visible("#retry") and page.is_hidden("#cancel")
        assert "does not exist" in (page.text_content("#job-error-message") or "")
        assert page.text_content("li.stage[data-stage=fetch] .stage-status") == "failed"
        shutil.copytree(DEMO_REPO, missing)
        with page.expect_navigation():
            page.click("#retry")
        page.wait_for_function(STATUS_IS, arg="completed", timeout=180_000)
        assert wait_job(store, "broken").status == JobStatus.COMPLETED
        assert page.is_hidden("#job-error") and page.is_hidden("#retry")

        page.goto(f"{api.url}/ui/jobs")
        assert sorted(page.locator("tr.job-row").evaluate_all("rs => rs.map(r => r.dataset.job)")) == [
            "broken", "waiting"]
        page.select_option("select[name=status]", "cancelled")
        with page.expect_navigation():
            page.click("form.filter button[type=submit]")
        assert page.url.endswith("/ui/jobs?status=cancelled")
        assert page.locator("tr.job-row").evaluate_all("rs => rs.map(r => r.dataset.job)") == ["waiting"]
        page.goto(f"{api.url}/ui/jobs?status=failed")
        assert page.locator("tr.job-row").count() == 0 and page.is_visible("#no-jobs")
    assert browser.errors == []
