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
    elapsed_s: float = 0.0
    error: str | None = None
    resumed_from: JSON | None = None
    continuations: int = 0
    # Runs in a row that ended without a word (their process died, or lost its lease) since the cursor last
    # moved: a killed process cannot count its own failure, so the next run (or the reconciler) does.
    lost_runs: int = 0
    summary: JSON = field(default_factory=dict)
    enqueued_at: float | None = None

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


@dataclass
class StageResult:
    """What `run(ctx)` returns: finished (with a summary for the job result) or not yet (continue later)."""

    finished: bool
    summary: JSON = field(default_factory=dict)
    # When not finished: how long to wait before continuing (a stage waiting on fanned-out batches
    # must not hold a worker process while it waits).
    wait_s: float = 0.0

    @classmethod
    def more(cls, wait_s: float = 0.0) -> StageResult:
        return cls(finished=False, wait_s=wait_s)

    @classmethod
    def done(cls, **summary: Any) -> StageResult:
        return cls(finished=True, summary=summary)
