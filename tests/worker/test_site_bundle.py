"""Tier 2: a Zola blog with a real git history through the HTTP API, Redis and a worker process: the bundle's
posts.json and content.sqlite carry the git dates, the resolved links, section pages, and drafts only on demand."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore
from tests.conftest import ApiServer, Workers, wait_job
from tests.stages.site_fixtures import ZOLA_DATES, zola_blog

pytestmark = pytest.mark.integration


def run_job(api: ApiServer, store: JobStore, job_id: str, source: Path, **options: Any) -> Path:
    r = api.client.post("/jobs", json={"task": "process-all", "source": str(source), "job_id": job_id,
                                       "options": {"skipEmbeddings": True, **options}})
    assert r.status_code == 202, r.text
    job = wait_job(store, job_id)
    assert job.status == JobStatus.COMPLETED, job.error
    assert job.result is not None
    bundle = Path(job.result["distFolder"])
    assert job.result["counts"]["drafts"] == (0 if options.get("includeDrafts") else 1)
    return bundle


def test_zola_blog_bundle_has_dates_links_and_sections(settings: Settings, workers: Workers, store: JobStore,
                                                        api_factory: Callable[[Settings], ApiServer],
                                                        tmp_path: Path) -> None:
    repo = zola_blog(tmp_path / "zola")
    workers.start(settings)
    api = api_factory(settings)
    bundle = run_job(api, store, "zola-1", repo)
    posts = {p["originalFilePath"]: p for p in json.loads((bundle / "posts.json").read_text())}
    assert "content/blog/wip.md" not in posts
    for rel, (created, modified) in ZOLA_DATES.items():
        if rel in posts:
            assert (posts[rel]["gitCreated"], posts[rel]["gitModified"]) == (created, modified), rel
    assert posts["content/blog/gats.md"]["date"] == "2022-10-28"
    assert posts["content/blog/_index.md"]["slug"] == "blog" and posts["content/blog/_index.md"]["isSection"]
    gats, foo = posts["content/blog/gats.md"], posts["content/inside-rust/foo.md"]
    assert foo["hash"] in gats["links"] and gats["hash"] in foo["links"]
    graph = json.loads((bundle / "graph.json").read_text())
    assert {"source": gats["hash"], "target": foo["hash"], "type": "POST_LINKS_TO_POST"} in graph["edges"]
    summary = json.loads((bundle / "processor-issues.json").read_text())["summary"]
    assert summary["draftsLeftOut"] == 1 and summary["brokenLinks"] == 1

    con = sqlite3.connect(bundle / "content.sqlite")
    try:
        rows = {r[0]: r[1:] for r in con.execute("SELECT _path, _created, _modified, _backlinks, _type FROM posts")}
        links = set(con.execute("SELECT source_id, target_id FROM links"))
        noise = con.execute("SELECT count(*) FROM posts_fts WHERE posts_fts MATCH 'youtube'").fetchone()[0]
    finally:
        con.close()
    assert rows["content/inside-rust/foo.md"][:2] == ZOLA_DATES["content/inside-rust/foo.md"]
    assert gats["hash"] in json.loads(rows["content/inside-rust/foo.md"][2])
    assert rows["content/blog/_index.md"][3] == "section"
    assert (gats["hash"], foo["hash"]) in links
    assert noise == 0  # the Zola shortcode is in the HTML, not in the search index

    with_drafts = run_job(api, store, "zola-2", repo, includeDrafts=True)
    paths = {p["originalFilePath"] for p in json.loads((with_drafts / "posts.json").read_text())}
    assert "content/blog/wip.md" in paths
