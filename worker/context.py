"""The StageContext a Celery task gives a stage: Redis-backed cursor, lease, budget, cancellation."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from pipeline.artifacts import ArtifactStore
from pipeline.checkpoints import JobStore
from pipeline.errors import JobCancelled, LeaseLost
from pipeline.models import JSON, Issue, JobSpec, JobStatus, StageState
from pipeline.settings import Settings
from pipeline.stages.context import job_key

log = logging.getLogger("repobuild.worker")


class LeaseKeeper:
    """Renews a stage lease in the background; flags the loss if renewal ever fails."""

    def __init__(self, store: JobStore, job_id: str, stage: str, token: str, ttl_s: float) -> None:
        self.store, self.job_id, self.stage, self.token, self.ttl_s = store, job_id, stage, token, ttl_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{job_id}-{stage}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.store.release_lease(self.job_id, self.stage, self.token)

    def _loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.store.renew_lease(self.job_id, self.stage, self.token, self.ttl_s):
                    log.warning("lease lost", extra={"job_id": self.job_id, "stage": self.stage})
                    self.lost.set()
                    return
            except Exception as exc:  # a Redis blip: keep trying until the lease would have expired
                log.warning("lease renewal failed: %s", exc)


@dataclass
class RedisStageContext:
    job_id: str
    stage: str
    spec: JobSpec
    settings: Settings
    artifacts: ArtifactStore
    store: JobStore
    state: StageState
    lease: LeaseKeeper
    job_secrets: dict[str, str] = field(default_factory=dict)
    _started: float = field(default_factory=time.monotonic)
    _last_cancel_check: float = 0.0

    @property
    def cursor(self) -> JSON | None:
        return self.state.cursor

    def key(self, name: str, stage: str | None = None) -> str:
        return job_key(self.job_id, stage or self.stage, name)

    def _write(self) -> None:
        if self.lease.lost.is_set() or not self.store.put_stage(self.job_id, self.state, self.lease.token):
            raise LeaseLost(f"{self.job_id}/{self.stage}: lease lost; another worker owns this stage now")

    def save_cursor(self, cursor: JSON) -> None:
        self.state.cursor = cursor
        self._write()

    def progress(self, done: int, total: int) -> None:
        self.state.done, self.state.total = done, total
        self._write()
        self.store.event(self.job_id, "progress", f"{self.stage} {done}/{total}", stage=self.stage,
                         done=done, total=total)

    def record_issue(self, issue: Issue) -> None:
        self.store.add_issue(self.job_id, issue)

    def should_yield(self) -> bool:
        if self.lease.lost.is_set():
            raise LeaseLost(f"{self.job_id}/{self.stage}: lease lost")
        now = time.monotonic()
        if now - self._last_cancel_check >= 0.5:
            self._last_cancel_check = now
            if self.store.status(self.job_id) == JobStatus.CANCELLED:
                raise JobCancelled(f"job {self.job_id} was cancelled")
        return now - self._started >= self.settings.task_budget_s

    def log(self, message: str, level: str = "info") -> None:
        log.log(logging.ERROR if level == "error" else logging.INFO, "%s", message,
                extra={"job_id": self.job_id, "stage": self.stage})
        self.store.event(self.job_id, "log", message, stage=self.stage, level=level)

    def secret(self, name: str) -> str | None:
        if name == "git_token" and name not in self.job_secrets:
            return self.settings.github_token  # the original's GITHUB_TOKEN: a service-wide default
        return self.job_secrets.get(name)
