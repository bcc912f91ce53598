"""Tier 2: the stage tasks show up in Flower, whose API stays closed without credentials."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore
from tests.conftest import DEMO_REPO, ApiServer, Workers, wait_job

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False  # not accepting connections yet


def test_flower_lists_the_stage_tasks(settings: Settings, workers: Workers, store: JobStore, tmp_path: Path,
                                      api_factory: Callable[[Settings], ApiServer]) -> None:
    port = free_port()
    env = {**os.environ, **settings.to_env(), "FLOWER_BASIC_AUTH": "ops:flower-pass"}
    log = (tmp_path / "flower.log").open("wb")
    flower = subprocess.Popen([sys.executable, "-m", "api.cli.main", "flower", f"--port={port}", "--address=127.0.0.1"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not listening(f"{base}/healthcheck"):
            assert time.monotonic() < deadline, (tmp_path / "flower.log").read_text()[-2000:]
            time.sleep(0.3)
        workers.start(settings)
        api = api_factory(settings)
        api.client.post("/jobs", json={"task": "process-all", "source": str(DEMO_REPO), "job_id": "seen",
                                       "options": {"skipEmbeddings": True}})
        assert wait_job(store, "seen").status == JobStatus.COMPLETED
        assert httpx.get(f"{base}/api/tasks", timeout=5).status_code == 401
        names: set[str] = set()
        deadline = time.monotonic() + 30
        while "repobuild.publish" not in names and time.monotonic() < deadline:
            tasks = httpx.get(f"{base}/api/tasks", auth=("ops", "flower-pass"), timeout=5).json()
            names = {str(t.get("name")) for t in tasks.values()}
            time.sleep(0.5)
        assert {"repobuild.fetch", "repobuild.parse", "repobuild.publish"} <= names, names
    finally:
        flower.terminate()
        flower.wait(timeout=20)
        log.close()
