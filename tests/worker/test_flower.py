"""Tier 2: Flower shows the worker and every stage task of a finished job, behind its credentials; a task's
arguments are ids only, so no credential a job carries ever shows up in Flower's answers."""

from __future__ import annotations

import ast
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.cli.local_services import free_port
from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore
from tests.conftest import DEMO_REPO, ApiServer, CallbackServer, Workers, wait_job
from tests.e2e.places_secrets_hide import serving
from tests.fakes.gitserver import GitHttpServer, make_git_repo

pytestmark = pytest.mark.integration
FLOWER_AUTH = ("ops", "flower-pass")
GIT_TOKEN = "flowertok-3c8e1a5d"  # the git server takes it; sent in the URL's userinfo and as `token`
CALLBACK_PASSWORD = "flowercb-7a2f4e90"  # userinfo of the callback URL
CALLBACK_SECRET = "flowersig-5d0b6c21"  # the service's own signing key


def task_args(record: dict[str, Any]) -> tuple[Any, ...]:
    """A task's positional arguments from Flower's repr of them (a list once a worker sent it on in a chain)."""
    return tuple(ast.literal_eval(record.get("args") or "()"))


def flower_tasks_of(base: str, job_id: str, stages: list[str], timeout: float = 30) -> dict[str, Any]:
    """Flower's task records of `job_id`, once every stage has a succeeded task there (events arrive late)."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = httpx.get(f"{base}/api/tasks", auth=FLOWER_AUTH, timeout=5).json()
        mine = {tid: t for tid, t in tasks.items() if task_args(t)[:1] == (job_id,)}
        succeeded = {t["name"] for t in mine.values() if t.get("state") == "SUCCESS"}
        if {f"repobuild.{s}" for s in stages} <= succeeded:
            return mine
        assert time.monotonic() < deadline, (sorted(succeeded), stages)
        time.sleep(0.5)


def test_flower_lists_the_worker_and_the_stage_tasks_without_secrets(
        settings: Settings, workers: Workers, store: JobStore, tmp_path: Path,
        api_factory: Callable[[Settings], ApiServer], callback_server: Callable[..., CallbackServer]) -> None:
    files = {p.relative_to(DEMO_REPO).as_posix(): p.read_bytes() for p in DEMO_REPO.rglob("*") if p.is_file()}
    make_git_repo(tmp_path / "origin", files, "import")
    git = GitHttpServer({"site": tmp_path / "origin"}, token=GIT_TOKEN)
    settings = settings.with_(callback_secret=CALLBACK_SECRET)
    secrets = (GIT_TOKEN, CALLBACK_PASSWORD, CALLBACK_SECRET)
    base = f"http://127.0.0.1:{free_port()}"
    try:
        with serving([sys.executable, "-m", "api.cli.main", "flower", f"--port={base.rsplit(':', 1)[1]}",
                      "--address=127.0.0.1"], {**settings.to_env(), "FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH)},
                     tmp_path / "flower.log", f"{base}/healthcheck"):
            worker = workers.start(settings)
            api = api_factory(settings)
            cb = callback_server()
            r = api.client.post("/jobs", json={
                "task": "process-all", "job_id": "seen", "token": GIT_TOKEN, "options": {"skipEmbeddings": True},
                "source": git.url_for("site").replace("http://", f"http://x-access-token:{GIT_TOKEN}@"),
                "callback_url": cb.url.replace("http://", f"http://hook:{CALLBACK_PASSWORD}@")})
            assert r.status_code == 202, r.text
            job = wait_job(store, "seen")
            assert job.status == JobStatus.COMPLETED, job.error
            assert len(cb.accepted) == 1  # the credentials were used where they belong

            assert httpx.get(f"{base}/api/tasks", timeout=5).status_code == 401
            assert httpx.get(f"{base}/api/workers", timeout=5).status_code == 401
            stages = [s.name for s in job.stages]
            tasks = flower_tasks_of(base, "seen", stages)
            answers = {"/api/tasks": httpx.get(f"{base}/api/tasks", auth=FLOWER_AUTH, timeout=5).text}
            for tid in tasks:
                info = httpx.get(f"{base}/api/task/info/{tid}", auth=FLOWER_AUTH, timeout=5)
                assert info.status_code == 200, info.text
                answers[f"/api/task/info/{tid}"] = info.text
                # ids only: the job's (a batch task adds its stage and number); a continuation says it is one
                args = task_args(info.json())
                assert args[0] == "seen" and all(isinstance(a, str | int) for a in args[1:]), args
                kwargs = ast.literal_eval(info.json()["kwargs"] or "{}")
                # a continuation says it is one; a batch carries when it was sent (a number, no secret)
                assert kwargs in ({}, {"continuation": True}) or (set(kwargs) == {"sent_at"} and isinstance(
                    kwargs["sent_at"], float)), kwargs
            prefix, names = worker.name.split("@")[0] + "@", []
            deadline = time.monotonic() + 30
            while not any(name.startswith(prefix) for name in names):  # refresh=1: ask the workers, not a cache
                assert time.monotonic() < deadline, names
                listed = httpx.get(f"{base}/api/workers", params={"refresh": 1}, auth=FLOWER_AUTH, timeout=20)
                assert listed.status_code == 200, listed.text
                answers["/api/workers"], names = listed.text, list(listed.json())
    finally:
        git.stop()
    leaks = {s: [where for where, text in answers.items() if s in text] for s in secrets}
    assert not any(leaks.values()), json.dumps(leaks, indent=1)
