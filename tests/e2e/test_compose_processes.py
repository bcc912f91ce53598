"""Tier 3: the exact commands of docker-compose.yml, run as processes, serve a job.

No Docker engine runs here, so the containers' commands run as plain processes instead: the s3-bucket, worker and
api commands as Docker Compose renders them, with the image's environment (the Dockerfile's ENV) and the service's,
rewritten only to reach this test's Redis and SeaweedFS instead of the compose network's, to keep its folders
under the test's own, and to bind gunicorn to loopback. A deploy-repo job then goes in over HTTP to gunicorn, runs
on the worker and lands in the bucket; the containers' health checks pass against them; SIGTERM stops both
cleanly (they are PID 1 of their containers, so the signal must reach gunicorn and Celery themselves).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.cli.local_services import PrivateRedis, free_port
from tests.conftest import DEMO_REPO
from tests.deploy_files import ROOT, compose_model, dockerfile_env, entry_point_argv
from tests.e2e.s3_bucket import client_of, keys_under, s3_json
from tests.fakes.seaweed import S3Server

pytestmark = pytest.mark.e2e
COMPOSE_REDIS = "redis://redis:6379/0"
COMPOSE_S3 = "http://s3:8333"


def container_env(service: dict[str, Any], redis_url: str, s3: S3Server, root: Path) -> dict[str, str]:
    """The service's environment in its container (image ENV, then the service's), pointed at the test's servers."""
    env = {k: v for k, v in dockerfile_env().items() if k != "PATH"}  # PATH: this machine's programs
    env.update({k: str(v) for k, v in service.get("environment", {}).items()})
    assert env["REPOBUILD_REDIS_URL"] == COMPOSE_REDIS and env["REPOBUILD_S3_ENDPOINT_URL"] == COMPOSE_S3
    env["REPOBUILD_REDIS_URL"] = redis_url
    env["REPOBUILD_S3_ENDPOINT_URL"] = s3.endpoint
    for key, value in env.items():  # the container's own folders, kept under the test's
        if value.startswith(("/tmp", "/data")):
            env[key] = str(root / value.lstrip("/"))
    # not in the compose file, because a container has nothing of its host's to read: the test submits a folder
    env["REPOBUILD_LOCAL_SOURCE_ROOTS"] = str(DEMO_REPO)
    return env


class Service:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(entry_point_argv(argv), cwd=log.parent,
                                         env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **env},
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def terminate(self, timeout: float) -> int:
        """SIGTERM to the process itself, as `docker stop` sends it to PID 1; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            os.killpg(s.proc.pid, signal.SIGKILL)
            s.proc.wait()


def wait_http(url: str, service: Service, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert service.proc.poll() is None, f"{service.name} exited:\n{service.tail()}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer 200 in {timeout}s:\n{service.tail()}")


def test_compose_commands_serve_a_job(redis_server: PrivateRedis, s3_server: S3Server, tmp_path: Path,
                                      services: list[Service]) -> None:
    bucket = f"compose-{uuid.uuid4().hex[:8]}"  # a new bucket: the one-shot service must create it
    model = compose_model({"FLOWER_BASIC_AUTH": "ops:pass", "S3_ACCESS_KEY": s3_server.access_key,
                           "S3_SECRET_KEY": s3_server.secret_key, "S3_BUCKET": bucket})["services"]
    env = {name: container_env(model[name], redis_server.url, s3_server, tmp_path) for name in
           ("s3-bucket", "worker", "api")}

    made = subprocess.run(entry_point_argv(model["s3-bucket"]["command"]), capture_output=True, text=True,
                          timeout=60, env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
                                           **env["s3-bucket"]})
    assert made.returncode == 0, made.stderr
    assert f'"bucket": "{bucket}", "created": true' in made.stdout

    worker = Service("worker", model["worker"]["command"], env["worker"], tmp_path / "worker.log")
    services.append(worker)
    port = free_port()
    api_env = {**env["api"], "REPOBUILD_PORT": str(port), "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port}"}
    api = Service("api", model["api"]["command"], api_env, tmp_path / "api.log")
    services.append(api)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/ready", api)
    # api/gunicorn_conf.py made the Prometheus multiprocess folder its workers share, in the container's temp dir
    metrics_dirs = list(Path(api_env["REPOBUILD_TEMP_DIR"]).glob("repobuild-api-metrics-*"))
    assert len(metrics_dirs) == 1

    project = f"p-{uuid.uuid4().hex[:6]}"
    job_id = f"compose-{project}"
    r = httpx.post(f"{base}/jobs", json={"task": "deploy-repo", "source": str(DEMO_REPO), "project_id": project,
                                         "job_id": job_id, "options": {"skipEmbeddings": True}}, timeout=30)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 180
    while (job := httpx.get(f"{base}/jobs/{job_id}", timeout=10).json())["status"] not in (
            "completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job still {job['status']}:\n{worker.tail()}"
        assert worker.proc.poll() is None, worker.tail()
        time.sleep(0.5)
    assert job["status"] == "completed", job.get("error")

    s3 = client_of(s3_server)
    pointer = s3_json(s3, bucket, f"projects/{project}/latest.json")
    assert pointer["rev"] == job_id
    assert keys_under(s3, bucket, "artifacts/")  # the stage outputs the workers share went to the bucket too

    for name, target, service_env in (("worker", model["worker"], env["worker"]), ("api", model["api"], api_env)):
        check = target["healthcheck"]["test"][1:]
        deadline = time.monotonic() + 15  # the compose start_period: a worker's first beat follows its start
        while (done := subprocess.run(entry_point_argv(check), capture_output=True, text=True, timeout=60, env={
                "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **service_env})).returncode != 0:
            assert time.monotonic() < deadline, (name, done.stderr)
            time.sleep(0.5)

    assert api.terminate(timeout=40) == 0, api.tail()
    assert not metrics_dirs[0].exists()  # removed at exit: the next start sums no stale metrics
    assert worker.terminate(timeout=60) == 0, worker.tail()
    assert "Warm shutdown" in worker.tail()
