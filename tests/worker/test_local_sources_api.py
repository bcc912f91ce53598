"""Tier 2: through the live API and a worker, the server's own disk is out of a caller's reach (issue 9): a path
outside REPOBUILD_LOCAL_SOURCE_ROOTS is a 400 naming the field and no path, the worker checks again before it
reads, and `repobuild run` still takes any folder the local user names."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.sources.local_roots import NOT_ALLOWED
from pipeline.stores.jobs import JobStore
from tests.conftest import DEMO_REPO, ROOT, ApiServer, Workers, wait_job

pytestmark = pytest.mark.integration
CALLBACK = "http://127.0.0.1:9/callback"  # never called: every request here is refused or has no callback


@pytest.fixture
def disk(tmp_path: Path) -> dict[str, Path]:
    """An allowed root holding a site, and around it what a caller must not reach."""
    root, beside = tmp_path / "srv" / "a", tmp_path / "srv" / "ab"
    shutil.copytree(DEMO_REPO, root / "site")
    shutil.copytree(DEMO_REPO, beside / "site")
    (beside / "dist").mkdir()
    (beside / "dist" / "posts.json").write_text("[]")
    (tmp_path / "secret.xml").write_text("<rss/>")
    (root / "escape").symlink_to(beside, target_is_directory=True)
    return {"root": root, "site": root / "site", "beside": beside / "site", "dist": beside / "dist",
            "secret": tmp_path / "secret.xml", "escape": root / "escape" / "site",
            "dotdot": root / ".." / "ab" / "site", "missing": tmp_path / "missing"}


def refused(api: ApiServer, route: str, body: dict[str, Any], field: str, secret_paths: list[Path]) -> str:
    r = api.client.post(route, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and r.json()["message"] == f"{field}: {NOT_ALLOWED}", r.text
    for path in secret_paths:
        assert str(path) not in r.text
    return r.text


def process(task: str, data: dict[str, Any], job: str = "p1") -> dict[str, Any]:
    return {"jobId": job, "task": task, "callbackUrl": CALLBACK, "data": data}


def test_every_field_naming_a_path_outside_the_roots_is_a_400(settings: Settings, store: JobStore,
                                                             api_factory: Callable[[Settings], ApiServer],
                                                             disk: dict[str, Path], tmp_path: Path) -> None:
    settings = settings.with_(local_source_roots=(str(disk["root"]),))
    api = api_factory(settings)  # no worker: nothing refused may even be stored
    hidden = [tmp_path, Path(settings.artifacts)]
    for where in ("beside", "escape", "dotdot", "secret", "missing"):
        path = str(disk[where])
        refused(api, "/jobs", {"task": "process-all", "source": path}, "source", hidden)
        refused(api, "/jobs", {"task": "process-all", "source": f"file://{path}"}, "source", hidden)
        refused(api, "/process", process("process-all", {"repoInfo": {"path": path}}), "data.repoInfo.path", hidden)
        refused(api, "/process", process("deploy-repo", {"repoUrl": f"file://{path}", "projectId": "p"}),
                "data.repoUrl", hidden)
    outside = str(disk["dist"])
    refused(api, "/process", process("wp-import", {"xmlFilePath": str(disk["secret"])}), "data.xmlFilePath", hidden)
    refused(api, "/process", process("wp-import", {"wpXml": "PHJzcy8+", "remoteUrl": f"file://{disk['beside']}"}),
            "data.remoteUrl", hidden)
    refused(api, "/process", process("build-database", {"distFolder": outside}), "data.distFolder", hidden)
    refused(api, "/process", process("enrich-data", {"assets": {"distFolder": outside}}), "data.assets.distFolder",
            hidden)
    refused(api, "/process", process("publish-build-files", {"repoInfo": {"distPath": outside}, "projectId": "p"}),
            "data.repoInfo.distPath", hidden)
    refused(api, "/jobs", {"task": "build-database", "options": {"distFolder": outside}}, "options.distFolder", hidden)
    assert store.list_jobs(None, 100) == []
    # no roots at all: no path is taken, whatever it is
    none = api_factory(settings.with_(local_source_roots=()))
    r = none.client.post("/jobs", json={"task": "process-all", "source": str(disk["site"])})
    assert r.status_code == 400 and r.json()["field"] == "source"
    assert "REPOBUILD_LOCAL_SOURCE_ROOTS is empty" in r.json()["message"] and str(tmp_path) not in r.text


def test_missing_unreadable_and_not_a_folder_outside_the_roots_answer_alike(settings: Settings, tmp_path: Path,
                                                                           api_factory: Callable[[Settings],
                                                                                                 ApiServer],
                                                                           disk: dict[str, Path]) -> None:
    api = api_factory(settings.with_(local_source_roots=(str(disk["root"]),)))
    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    locked.chmod(0)
    try:
        bodies = {refused(api, "/process", process("build-database", {"distFolder": str(path)}), "data.distFolder",
                          [tmp_path])
                  for path in (tmp_path / "nothing-here", disk["secret"], locked / "inner", disk["dist"])}
    finally:
        locked.chmod(0o700)
    assert len(bodies) == 1


def test_a_source_under_a_root_runs_and_the_worker_checks_again(settings: Settings, workers: Workers,
                                                                store: JobStore, disk: dict[str, Path],
                                                                api_factory: Callable[[Settings], ApiServer]) -> None:
    api_settings = settings.with_(local_source_roots=(str(disk["root"]),))
    api = api_factory(api_settings)
    # the worker's roots were changed after these jobs were enqueued: it has only the site's own folder now
    workers.start(settings.with_(local_source_roots=(str(disk["site"]),)))
    ok = api.client.post("/process", json=process("process-all", {"repoInfo": {"path": str(disk["site"])},
                                                                  "skipEmbeddings": True}, job="ok"))
    assert ok.status_code == 202, ok.text
    dist = disk["root"] / "dist"
    dist.mkdir()
    (dist / "posts.json").write_text("[]")
    late = api.client.post("/process", json=process("build-database", {"distFolder": str(dist)}, job="late"))
    assert late.status_code == 202, late.text
    job = wait_job(store, "ok")
    assert job.status == JobStatus.COMPLETED, job.error
    assert job.result and job.result["counts"]["posts"] > 0
    job = wait_job(store, "late")
    assert job.status == JobStatus.FAILED and job.error and job.error["stage"] == "build_db"
    assert job.error["message"] == f"distFolder: {NOT_ALLOWED}"
    assert sorted(p.name for p in dist.iterdir()) == ["posts.json"]  # not rewritten


def test_repobuild_run_takes_any_folder_the_user_names(tmp_path: Path) -> None:
    """The command line is the user's own machine: no roots configured, a folder anywhere (a comma in its name,
    which the roots' list cannot hold), and its links still go nowhere."""
    folder = tmp_path / "my,site"
    shutil.copytree(DEMO_REPO, folder)
    os.symlink("/etc/passwd", folder / "passwd.md")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPOBUILD_", "SKIP_EMBEDDINGS"))}
    env.update(PYTHONPATH=str(ROOT), REPOBUILD_SKIP_EMBEDDINGS="1", REPOBUILD_TEMP_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "api.cli.main", "run", str(folder), "--out", str(out),
                           "--job-id", "cli-1", "--concurrency", "1"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    bundle = out / "cli-1"
    assert (bundle / "posts.json").is_file()
    published = b"".join(p.read_bytes() for p in bundle.rglob("*") if p.is_file())
    assert b"root:x:0:0" not in published
