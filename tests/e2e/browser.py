"""Real headless Chromium for the job pages: Debian's binary driven by playwright, a fresh profile each time.

playwright's own browser download cannot work on the machines this runs on, so the browser is the system's
`chromium` (`.ci/run` installs it); where there is none, the test is skipped and says why.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The screenshot of the job page is kept here too, outside the test's temporary folder (ignored by git).
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class Browser:
    page: Any  # playwright.sync_api.Page (playwright is imported only when a browser is there)
    errors: list[str] = field(default_factory=list)

    def screenshot(self, path: Path) -> Path:
        """A full-page screenshot at `path`, copied into test-artifacts/; the copy's path is returned."""
        self.page.screenshot(path=str(path), full_page=True)
        ARTIFACTS.mkdir(exist_ok=True)
        kept = ARTIFACTS / path.name
        shutil.copyfile(path, kept)
        print(f"screenshot: {path} (kept as {kept})")
        return kept


@contextmanager
def chromium(profile: Path) -> Iterator[Browser]:
    """One page of a browser with the user-data dir `profile`; console errors and uncaught exceptions recorded."""
    if not CHROMIUM.exists():
        pytest.skip(f"no browser: {CHROMIUM} is missing (install Debian's chromium: apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(str(profile), executable_path=str(CHROMIUM), headless=True,
                                                        args=FLAGS)
        try:
            browser = Browser(context.pages[0] if context.pages else context.new_page())
            browser.page.on("console", lambda msg: browser.errors.append(msg.text) if msg.type == "error" else None)
            browser.page.on("pageerror", lambda exc: browser.errors.append(f"uncaught: {exc}"))
            browser.page.set_default_timeout(30_000)
            yield browser
        finally:
            context.close()
