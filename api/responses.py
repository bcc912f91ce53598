"""What the API answers: one model per response body, for the OpenAPI document, and the job view built from one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from pipeline.models import JSON, JobStatus, StageStatus
from pipeline.stores.jobs import JobView


class ErrorBody(BaseModel):
    """Every refusal and failure: `{status: "error", message}`, with the field at fault when there is one."""

    status: Literal["error"]
    message: str
    field: str | None = Field(default=None, description="the request field at fault, as `data.depth`")


class JobConflict(ErrorBody):
    job_id: str | None = None


class ProcessConflict(ErrorBody):
    jobId: str | None = None


class Health(BaseModel):
    status: Literal["healthy"]
    timestamp: str


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    timestamp: str
    message: str | None = None


class JobAccepted(BaseModel):
    job_id: str
    status: JobStatus
    status_url: str


class ProcessAccepted(BaseModel):
    status: Literal["accepted"]
    jobId: str


class JobTransition(BaseModel):
    job_id: str
    status: JobStatus


class JobSummary(BaseModel):
    job_id: str
    task: str
    status: JobStatus
    created_at: float
    error: dict[str, Any] | None


class JobList(BaseModel):
    jobs: list[JobSummary]


class Progress(BaseModel):
    done: int
    total: int


class StageBody(BaseModel):
    name: str
    status: StageStatus
    attempts: int
    continuations: int
    progress: Progress
    cursor: dict[str, Any] | None
    resumed_from: dict[str, Any] | None
    started_at: str | None
    finished_at: str | None
    elapsed_s: float = Field(description="wall time from the stage's first start to done (or to now), batches included")
    task_s: float = Field(description="the time all the stage's tasks ran: its own, continuations, fanned-out batches")
    own_task_s: float = Field(description="the part of task_s the stage's own tasks ran, without its batches")
    error: str | None
    summary: dict[str, Any]


class JobBody(BaseModel):
    """`GET /jobs/<id>`: the job, its stages in plan order, its first issues."""

    job_id: str
    task: str
    status: JobStatus
    source: dict[str, Any] | None
    project_id: str | None
    created_at: str | None
    updated_at: str | None
    started_at: str | None
    finished_at: str | None
    stages: list[StageBody]
    error: dict[str, Any] | None
    result: dict[str, Any] | None
    callback: dict[str, Any] | None
    issue_count: int
    issues: list[dict[str, Any]]


class EmbeddingMetadata(BaseModel):
    model: str
    dimension: int
    duration: float = Field(description="milliseconds")
    timestamp: str
    instruction: str | None = None


class Embedding(BaseModel):
    status: Literal["success"]
    embedding: list[float]
    metadata: EmbeddingMetadata


class ProjectLatest(BaseModel):
    project_id: str
    latest: dict[str, Any] = Field(description="the project's `latest.json` pointer: rev, seq, jobId, publishedAt")


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts else None


def job_view(job: JobView, issues: list[JSON], issue_count: int) -> JSON:
    spec = job.spec
    body = JobBody(
        job_id=spec.job_id,
        task=spec.task,
        status=job.status,
        source=spec.source.model_dump(exclude_none=True) if spec.source else None,
        project_id=spec.project_id,
        created_at=_iso(job.created_at),
        updated_at=_iso(job.updated_at),
        started_at=_iso(job.started_at),
        finished_at=_iso(job.finished_at),
        stages=[StageBody(name=s.name, status=s.status, attempts=s.attempts, continuations=s.continuations,
                          progress=Progress(done=s.done, total=s.total), cursor=s.cursor,
                          resumed_from=s.resumed_from, started_at=_iso(s.started_at),
                          finished_at=_iso(s.finished_at), elapsed_s=round(s.wall_s(), 3),
                          task_s=round(s.task_s, 3), own_task_s=round(s.elapsed_s, 3), error=s.error,
                          summary=s.summary)
                for s in job.stages],
        error=job.error,
        result=job.result,
        callback=job.callback,
        issue_count=issue_count,
        issues=issues,
    )
    return body.model_dump(mode="json")
