"""Real services for the benchmark (a private Redis, worker processes, the API in a thread) and one timed job."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from api.cli.local_services import PrivateRedis, WorkerProcess
from benchmarks.cpu_use import Cpu, cpu_now
from pipeline.catalog import job_key
from pipeline.models import JobStatus, StageState
from pipeline.plans import job_is_over
from pipeline.settings import Settings
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.jobs import JobStore, JobView
from pipeline.stores.jobs_redis import RedisJobStore

T = TypeVar("T")
JOB_TIMEOUT_S = 3600.0  # only so that a wedged pipeline cannot hang the benchmark for ever
BATCH_LOG = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}): \w+/[^\]]*\] "
                       r"Task repobuild\.batch\[[^\]]+\] succeeded in ([0-9.]+)s", re.MULTILINE)

def wait_until(what: str, check: Callable[[], T | None], timeout: float, every: float = 0.02) -> T:
    """Poll `check` until it gives something truthy, and return that; an error naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


@dataclass
class Run:
    label: str
    job: JobView
    wall_s: float  # job created → completed: fetch through publish (notify not included)
    plan: dict[str, Any]
    phases: dict[str, float]
    batch_task_s: list[float]
    cpu: Cpu

    @property
    def embed(self) -> StageState:
        return self.job.stage("embed_text")


def stage_wall(s: StageState) -> float:
    return (s.finished_at or 0.0) - (s.started_at or 0.0)


def embed_phases(store: JobStore, job: JobView, name: str = "embed_text") -> dict[str, float]:
    """A fanned-out stage's phases from its events: plan (until its log line), batches (until a poll sees all
    done), rest."""
    stage = job.stage(name)
    start, end = stage.started_at or 0.0, stage.finished_at or 0.0
    planned = batches_done = None
    for _id, ev in store.events(job.spec.job_id, count=100_000):
        if ev.get("stage") != name:
            continue
        if planned is None and ev.get("type") == "log" and ev.get("message", "").startswith(f"{name}:"):
            planned = float(ev["ts"])
        if batches_done is None and ev.get("type") == "progress" and ev.get("done") == ev.get("total"):
            batches_done = float(ev["ts"])
    planned = planned or start
    batches_done = batches_done or planned
    return {"plan": planned - start, "batches": batches_done - planned, "assemble": end - batches_done,
            "planned_at": planned, "end": end}


def batch_tasks_between(log_path: str | None, start: float, end: float) -> list[float]:
    """Run times of the batch tasks a worker logged as finished between `start` and `end` (epoch seconds)."""
    return [e - s for s, e in batch_spans_between(log_path, start, end)]


def batch_spans_between(log_path: str | None, start: float, end: float) -> list[tuple[float, float]]:
    """(start, end) epoch seconds of the batch tasks a worker logged as finished between `start` and `end`."""
    if not log_path or not Path(log_path).exists():
        return []
    out = []
    for m in BATCH_LOG.finditer(Path(log_path).read_text(errors="replace")):
        ts = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
        if start <= ts <= end + 0.5:
            out.append((ts - float(m.group(3)), ts))
    return out


@dataclass
class Harness:
    """A private Redis, worker processes and the API in a thread; `close()` stops every one of them."""

    root: Path
    base: Settings
    redis: PrivateRedis | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    server: Any = None
    client: httpx.Client | None = None
    store: RedisJobStore | None = None
    started: int = 0

    def groups(self) -> set[int]:
        procs = [w.proc for w in self.workers] + [self.redis.proc if self.redis else None]
        return {p.pid for p in procs if p is not None}  # each was started in a session (group) of its own

    def start(self) -> Harness:
        from werkzeug.serving import make_server

        from api.app import create_app

        self.redis = PrivateRedis()
        self.redis.start()
        self.base = self.base.with_(redis_url=self.redis.url)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.server = make_server("127.0.0.1", 0, create_app(self.base), threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.server.server_port}", timeout=30)
        self.store = RedisJobStore.from_url(self.redis.url, prefix=self.base.key_prefix)
        return self

    def settings(self, artifacts: Path) -> Settings:
        return self.base.with_(artifacts=str(artifacts), output=str(self.root / "out"), temp_dir=str(self.root))

    def start_worker(self, settings: Settings, concurrency: int) -> WorkerProcess:
        from worker.factory import create_celery

        n = self.started
        self.started += 1
        w = WorkerProcess(settings.to_env(), concurrency=concurrency, log_path=str(self.root / f"worker-{n}.log"),
                          name=f"bench{n}-{os.getpid()}-{time.time_ns()}@%h")
        self.workers.append(w)
        w.start()
        app = create_celery(settings)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not w.alive():
                raise RuntimeError(f"worker exited: {Path(w.log_path or '').read_text()[-3000:]}")
            replies = app.control.ping(timeout=0.5)
            if any(w.name.split("@")[0] in name for reply in replies for name in reply):
                return w
        raise RuntimeError("worker did not answer a ping within 120 s")

    def stop_workers(self) -> None:
        while self.workers:
            self.workers.pop().stop(timeout=10)

    def submit(self, label: str, source: Path, settings: Settings) -> Run:
        assert self.client is not None and self.store is not None
        job_id = f"{label}-{time.time_ns()}"
        cpu0 = cpu_now(self.groups())
        resp = self.client.post("/jobs", json={"task": "process-all", "source": str(source), "job_id": job_id})
        if resp.status_code != 202:
            raise RuntimeError(f"POST /jobs answered {resp.status_code}: {resp.text}")
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while True:
            job = self.store.get(job_id)
            if job_is_over(job):
                break
            if not all(w.alive() for w in self.workers):
                raise RuntimeError(f"a worker process exited during {label} (run with --keep for its log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} did not finish within {JOB_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        cpu = cpu_now(self.groups()).minus(cpu0)
        if job.status != JobStatus.COMPLETED:
            raise RuntimeError(f"job {job_id} {job.status.value}: {job.error}")
        plan = LocalArtifactStore(settings.artifacts).get_json(job_key(job_id, "embed_text", "inputs.json"))
        phases = embed_phases(self.store, job)
        batch_s = [s for w in self.workers for s in batch_tasks_between(w.log_path, phases["planned_at"],
                                                                        phases["end"])]
        return Run(label, job, (job.finished_at or 0.0) - job.spec.created_at, plan, phases, batch_s, cpu)

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.stop(timeout=10)
        self.workers.clear()
        if self.client is not None:
            self.client.close()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.r.close()
        if self.redis is not None:
            self.redis.stop()


def discard(root: Path, keep: bool) -> None:
    """A benchmark's scratch folder goes at the end, unless `--keep` asked to look at it (its path is printed)."""
    if keep:
        print(f"kept {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)
