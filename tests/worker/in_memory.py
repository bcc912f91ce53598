"""What the unit tests of the worker share: a clock they move by hand, a job in a MemoryJobStore, and a
Celery app on that store with kombu's in-memory transport, so a task can be executed and what it sends
recorded without Redis, a broker or a worker process (never eager mode: the messages are real)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery.signals import before_task_publish

from pipeline.models import JobSpec
from pipeline.settings import Settings
from pipeline.stores.jobs import JobView
from pipeline.stores.jobs_memory import MemoryJobStore
from worker.factory import create_celery
from worker.repobuild_app import RepobuildCelery


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_job(store: MemoryJobStore, job_id: str = "j1", stages: tuple[str, ...] = ("fetch", "parse", "notify"),
             task: str = "process-all") -> JobView:
    job, created = store.create(JobSpec(job_id=job_id, task=task), stages)
    assert created
    return job


def memory_app(tmp_path: Path, store: MemoryJobStore, **settings: Any) -> RepobuildCelery:
    """The worker's own app, configured as in production, but on `store` and an in-memory broker."""
    app = create_celery(Settings(redis_url="memory://", artifacts=str(tmp_path / "artifacts"),
                                 output=str(tmp_path / "out"), temp_dir=str(tmp_path), **settings))
    app.store = store
    return app


@dataclass
class Sent:
    task: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    eta: str | None


@dataclass
class Outbox:
    """Every task message published while it records."""

    sent: list[Sent] = field(default_factory=list)

    def names(self) -> list[str]:
        return [s.task for s in self.sent]


@contextmanager
def recording() -> Iterator[Outbox]:
    box = Outbox()

    def record(sender: str | None = None, body: Any = None, headers: dict[str, Any] | None = None,
               **_: Any) -> None:
        args, kwargs, _embed = body
        box.sent.append(Sent(str(sender), tuple(args), dict(kwargs), (headers or {}).get("eta")))

    before_task_publish.connect(record, weak=False)
    try:
        yield box
    finally:
        before_task_publish.disconnect(record)
