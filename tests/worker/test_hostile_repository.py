"""Tier 2/3: a repository full of hostile posts and images, through the real HTTP API, Redis and a worker.

It completes: every hostile item is one issue naming it, every other post is published, and what the job
keeps in Redis stays small however large the request's fields were.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.stores.inputs import FIELD_MAX_BYTES
from pipeline.stores.jobs_redis import RedisJobStore
from tests.conftest import ApiServer, Workers, wait_job
from tests.fakes.gitserver import GitHttpServer, commit_raw_tree
from tests.stages.test_hostile_values import alias_bomb
from tests.stages.test_resource_bombs import thin_png

pytestmark = pytest.mark.integration

LONG_ENTRY = b"n" * 300 + b".md"
LONG_SLUG = "/".join(["folder-" + "x" * 190] * 25)
# path in the repository → (what it holds, the kind of issue it must make)
HOSTILE: dict[str, tuple[bytes, str]] = {
    "impossible-date.md": (b"---\ntitle: Leap\ndate: 2024-02-30\n---\nBody\n", "parse-error"),
    "huge-int.md": (b"---\nviews: " + b"9" * 5000 + b"\n---\nBody\n", "parse-error"),
    "bad-float.md": (b"---\nratio: !!float abc\n---\nBody\n", "parse-error"),
    "alias-bomb.md": (b"---\n" + alias_bomb().encode() + b"\n---\nBody\n", "parse-error"),
    "toml-deep.md": (b"+++\nx = " + b"[" * 3000 + b"]" * 3000 + b"\n+++\nBody\n", "parse-error"),
    "long-slug.md": (f"---\ntitle: Long\nslug: {LONG_SLUG}\n---\nBody\n".encode(), "slug"),
}


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (800, 600), colour).save(buf, "PNG")
    return buf.getvalue()


def test_hostile_repository_completes_with_one_issue_each(settings: Settings, workers: Workers,
                                                          store: RedisJobStore, tmp_path: Path,
                                                          api_factory: Callable[[Settings], ApiServer]) -> None:
    files = {path.encode(): data for path, (data, _) in HOSTILE.items()}
    tall = files[b"img/tall.png"] = thin_png(1, 60_000_000)  # 1 x 60,000,000 pixels: ~3 GB to resize
    files[LONG_ENTRY] = b"# a name no file system takes\n"
    files[b"img/photo.png"] = _png((20, 110, 190))
    files[b"welcome.md"] = b"---\ntitle: Welcome\ndate: 2024-02-28\n---\n![Harbour](img/photo.png)\n"
    files[b"strip.md"] = b"---\ntitle: Strip\n---\n![A very long strip](img/tall.png)\n"
    files[b"notes.md"] = b"+++\ntitle = \"Notes\"\n+++\nPlain notes.\n"
    commit_raw_tree(tmp_path / "origin", files)
    server = GitHttpServer({"site": tmp_path / "origin"})
    try:
        workers.start(settings)
        api = api_factory(settings)
        too_large = {"task": "process-all", "source": server.url_for("site"),
                     "options": {"blob": "z" * (FIELD_MAX_BYTES + 1)}}
        refused = api.client.post("/jobs", json=too_large)
        assert refused.status_code == 400 and "options.blob" in refused.json()["message"]
        body = {"task": "process-all", "source": server.url_for("site"), "job_id": "hostile-1",
                "options": {"skipEmbeddings": True, "clientNotes": "n" * 300_000}}
        assert api.client.post("/jobs", json=body).status_code == 202
        job = wait_job(store, "hostile-1", timeout=180)
        assert job.status == JobStatus.COMPLETED, job.error
        # the 300 kB field went to the artifact store: the spec every stage reads stays small
        assert len(store.r.hget(store.keys.job("hostile-1"), "spec") or "") < 2000

        view = api.client.get("/jobs/hostile-1")
        assert len(view.content) < 200_000
        issues = view.json()["issues"]
        expected = {path: kind for path, (_, kind) in HOSTILE.items()}
        expected |= {"img/tall.png": "media", "n" * 200 + "…": "checkout"}
        for path, kind in expected.items():
            assert [i["kind"] for i in issues if i["path"] == path] == [kind], (path, issues)

        bundle = Path(view.json()["result"]["distFolder"])
        posts = {p["originalFilePath"]: p for p in json.loads((bundle / "posts.json").read_text())}
        assert set(posts) == {"welcome.md", "strip.md", "notes.md", "long-slug.md"}
        assert len(json.dumps(posts)) < 100_000
        assert (bundle / "_posts" / "slug" / f"{posts['long-slug.md']['slug']}.json").is_file()
        sha = hashlib.sha256(tall).hexdigest()
        assert (bundle / "_medias" / f"{sha}.png").read_bytes() == tall
        assert f"{sha}.png" in posts["strip.md"]["html"]
        photo = hashlib.sha256(files[b"img/photo.png"]).hexdigest()
        assert (bundle / "_medias" / f"{photo}-lg.webp").is_file()
    finally:
        server.stop()

