"""Tier 2: the API under gunicorn with two worker processes, as deployed: /metrics adds up what every process
counted (PROMETHEUS_MULTIPROC_DIR), and with REPOBUILD_LOG_FORMAT=json every line on stderr, gunicorn's own
included, is a JSON object carrying the job it is about."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.cli.local_services import free_port, stop_group
from pipeline.settings import Settings
from tests.conftest import DEMO_REPO, ROOT
from tests.worker.test_metrics import scrape, value

pytestmark = pytest.mark.integration


def submit(client: httpx.Client, job_id: str) -> None:
    r = client.post("/jobs", json={"task": "process-all", "source": str(DEMO_REPO), "job_id": job_id})
    assert r.status_code == 202, r.text


def test_gunicorn_workers_add_up_in_metrics_and_log_json(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "prom").mkdir()
    served = settings.with_(prometheus_multiproc_dir=str(tmp_path / "prom"), log_format="json", events_stream_max_s=3.0)
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    env = {**os.environ, **served.to_env(), "PYTHONPATH": str(ROOT)}
    # the production config, with sync workers so one open stream holds a whole process (see below)
    cmd = [sys.executable, "-m", "gunicorn", "-c", "python:api.gunicorn_conf", "-w", "2", "-k", "sync",
           "-b", f"127.0.0.1:{port}", "api.app:create_app()"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not answer"
            time.sleep(0.1)
        with (httpx.Client(base_url=url, timeout=10) as one, httpx.Client(base_url=url, timeout=10) as other,
              httpx.Client(base_url=url, timeout=10, headers={"Connection": "close"}) as fresh):
            submit(one, "g-hold")
            # A sync gunicorn worker serves one request at a time: an open event stream (it lasts
            # events_stream_max_s) keeps one process busy, so the submissions in between go to the other.
            with one.stream("GET", "/jobs/g-hold/events") as first:
                for n in range(3):
                    submit(fresh, f"g-{n}")
                time.sleep(1.5)
                with other.stream("GET", "/jobs/g-hold/events") as second:
                    for _ in first.iter_bytes():
                        pass  # the first stream ends: its process is free, the other holds the second one
                    for n in range(3, 6):
                        submit(fresh, f"g-{n}")
                    for _ in second.iter_bytes():
                        pass
            for _ in range(4):
                samples = scrape(f"{url}/metrics")
                assert value(samples, "repobuild_jobs_submitted_total", task="process-all") == 7
                assert value(samples, "repobuild_queue_depth") == 7  # each job's first stage, and no worker
            assert one.get("/jobs/g-3").status_code == 200
    finally:
        stop_group(proc, 20)
    # both processes counted submissions: the sums above were over both
    assert len(list((tmp_path / "prom").glob("counter_*.db"))) == 2
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line, gunicorn's "Booting worker" included
    assert all({"job_id", "stage", "attempt", "task_id", "message", "level"} <= set(r) for r in records)
    access = [r for r in records if r["logger"] == "gunicorn.access" and "/jobs/g-3" in r["message"]]
    assert access and access[0]["job_id"] == "g-3", records[-5:]
    posts = [r for r in records if r["logger"] == "gunicorn.access" and "POST /jobs" in r["message"]]
    assert sorted(r["job_id"] for r in posts) == sorted(["g-hold", *(f"g-{n}" for n in range(6))])
