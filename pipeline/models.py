"""Typed shapes shared by the layers: job spec, job and stage state, issues, stage results."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JSON = dict[str, Any]


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}


class StageStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SourceSpec(BaseModel):
    """Where the repository comes from. Secrets (token) are kept apart from the stored spec."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    url: str | None = None
    branch: str | None = None
    commit: str | None = None
    depth: int | None = Field(default=None, ge=1)
    subfolder: str | None = None


class JobSpec(BaseModel):
    """What a job was asked to do. Stored once at enqueue, read by every stage."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    task: str
    source: SourceSpec | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    callback_url: str | None = None
    project_id: str | None = None
    org_id: str | None = None
    output: str | None = None
    created_at: float = Field(default_factory=time.time)

    def fingerprint(self) -> str:
        """Identity of the request for idempotent enqueue: everything but the creation time."""
        body = self.model_dump(mode="json", exclude={"created_at"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass
class StageState:
    name: str
    status: StageStatus = StageStatus.PENDING
    attempts: int = 0
    cursor: JSON | None = None
    done: int = 0
    total: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    # Seconds spent in the stage's own tasks (first run, continuations, retries), not its batches: see task_s.
    elapsed_s: float = 0.0
    error: str | None = None
    resumed_from: JSON | None = None
    continuations: int = 0
    # Runs in a row that ended without a word (their process died, or lost its lease) since the cursor last
    # moved: a killed process cannot count its own failure, so the next run (or the reconciler) does.
    lost_runs: int = 0
    summary: JSON = field(default_factory=dict)
    enqueued_at: float | None = None
    # Seconds spent in the stage's fanned-out batch tasks, on whichever workers ran them.
    batch_s: float = 0.0
    # Which run last marked it running (a run id: a prefix of its lease token). A run that ends in its task's
    # hands says so apart from this state (JobStore.mark_run_ended), so the next run can tell a run that died
    # from one that was alive but fenced off (its lease expired while Redis was down or it was paused).
    run: str | None = None

    @property
    def task_s(self) -> float:
        """Task time: every task the stage ran, its own and its batches' (more than wall time when they overlap)."""
        return self.elapsed_s + self.batch_s

    def wall_s(self, now: float | None = None) -> float:
        """Wall time from the stage's first start to done (to `now`, default the clock, while it is not done)."""
        if self.started_at is None:
            return 0.0
        # A stage retried after a failure keeps its old finished_at until it is done again.
        over = self.status in (StageStatus.DONE, StageStatus.FAILED, StageStatus.CANCELLED)
        end = self.finished_at if over and self.finished_at is not None else (time.time() if now is None else now)
        return max(0.0, end - self.started_at)

    def to_json(self) -> JSON:
        d = asdict(self)
        d["status"] = self.status.value
        return d

    @classmethod
    def from_json(cls, data: JSON) -> StageState:
        data = dict(data)
        data["status"] = StageStatus(data.get("status", "pending"))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Issue:
    """Something wrong with one item: recorded, reported, never fatal to the job."""

    stage: str
    path: str
    message: str
    severity: Severity = "error"
    kind: str = "item"

    def to_json(self) -> JSON:
        return asdict(self)


@dataclass(frozen=True)
class WorkCounts:
    """What a finished stage did, for the metrics: items it processed, and per cache (`vectors`, `variants`,
    `uploads`) the items it found there (hits: not redone) and those it had to do (misses)."""

    items: int = 0
    cache_hits: dict[str, int] = field(default_factory=dict)
    cache_misses: dict[str, int] = field(default_factory=dict)


@dataclass
class StageResult:
    """What `run(ctx)` returns: finished (with a summary for the job result) or not yet (continue later)."""

    finished: bool
    summary: JSON = field(default_factory=dict)
    # When not finished: how long to wait before continuing (a stage waiting on fanned-out batches
    # must not hold a worker process while it waits).
    wait_s: float = 0.0
    counts: WorkCounts = field(default_factory=WorkCounts)

    @classmethod
    def more(cls, wait_s: float = 0.0) -> StageResult:
        return cls(finished=False, wait_s=wait_s)

    @classmethod
    def done(cls, **summary: Any) -> StageResult:
        return cls(finished=True, summary=summary)

    def counting(self, items: int = 0, hits: dict[str, int] | None = None,
                 misses: dict[str, int] | None = None) -> StageResult:
        """This result, reporting what the stage did (the worker turns it into metrics; stages stay pure)."""
        self.counts = WorkCounts(items=items, cache_hits=dict(hits or {}), cache_misses=dict(misses or {}))
        return self
