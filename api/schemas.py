"""Request bodies, validated at the edge, and the job view the API returns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.http.credentials import split_spec
from pipeline.models import JSON, JobSpec, SourceSpec
from pipeline.stores.jobs import JobView

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


class BadRequest(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def first_error(exc: ValidationError) -> BadRequest:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or None
    return BadRequest(f"{where}: {err['msg']}" if where else err["msg"], where)


def source_spec(value: str | None, branch: str | None, commit: str | None, depth: int | None,
                subfolder: str | None = None) -> SourceSpec | None:
    """A source string → SourceSpec; its credentials are split off later, with the rest of the job (split_spec)."""
    if not value:
        return None
    if "://" in value or value.startswith("git@"):
        return SourceSpec(url=value, branch=branch, commit=commit, depth=depth, subfolder=subfolder)
    return SourceSpec(path=value, branch=branch, commit=commit, depth=depth, subfolder=subfolder)


class JobRequest(BaseModel):
    """`POST /jobs`: the native API."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=64)
    source: str | None = Field(default=None, max_length=4096)
    branch: str | None = Field(default=None, max_length=255)
    commit: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{7,40}$")
    depth: int | None = Field(default=None, ge=1)
    token: str | None = Field(default=None, max_length=4096)
    options: dict[str, Any] = Field(default_factory=dict)
    callback_url: str | None = Field(default=None, max_length=4096, pattern=r"^https?://")
    job_id: str | None = Field(default=None, pattern=JOB_ID_PATTERN)
    project_id: str | None = Field(default=None, max_length=128)
    org_id: str | None = Field(default=None, max_length=128)

    def to_spec(self) -> tuple[JobSpec, dict[str, str]]:
        source = source_spec(self.source, self.branch, self.commit, self.depth, self.options.get("repositoryFolder"))
        spec = JobSpec(
            job_id=self.job_id or uuid.uuid4().hex,
            task=self.task,
            source=source,
            options=dict(self.options),
            callback_url=self.callback_url,
            project_id=self.project_id,
            org_id=self.org_id,
        )
        return split_spec(spec, self.token)


MISSING_FIELDS = "Missing required fields: jobId, task, and callbackUrl are required"


class ProcessRequest(BaseModel):
    """`POST /process`: the original service's body."""

    model_config = ConfigDict(extra="allow")

    jobId: str = Field(pattern=JOB_ID_PATTERN)
    task: str = Field(min_length=1, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)
    callbackUrl: str = Field(pattern=r"^https?://")

    @field_validator("data", mode="before")
    @classmethod
    def _data_object(cls, v: Any) -> Any:
        return {} if v is None else v

    def to_spec(self) -> tuple[JobSpec, dict[str, str]]:
        data = dict(self.data)
        # pop both: a token under either name must not stay in the stored options
        git_token, github_token = data.pop("gitToken", None), data.pop("githubToken", None)
        token = git_token or github_token
        repo_info = data.get("repoInfo") or {}
        where = data.get("repoUrl") or (repo_info.get("path") if isinstance(repo_info, dict) else None)
        depth = data.get("depth")
        source = source_spec(where, data.get("branch"), data.get("commit"), int(depth) if depth else None,
                             data.get("repositoryFolder"))
        spec = JobSpec(
            job_id=self.jobId,
            task=self.task,
            source=source,
            options=data,
            callback_url=self.callbackUrl,
            project_id=data.get("projectId"),
            org_id=data.get("orgId"),
        )
        return split_spec(spec, str(token) if token else None)


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts else None


def job_view(job: JobView, issues: list[JSON], issue_count: int) -> JSON:
    spec = job.spec
    return {
        "job_id": spec.job_id,
        "task": spec.task,
        "status": job.status.value,
        "source": spec.source.model_dump(exclude_none=True) if spec.source else None,
        "project_id": spec.project_id,
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "stages": [
            {
                "name": s.name,
                "status": s.status.value,
                "attempts": s.attempts,
                "continuations": s.continuations,
                "progress": {"done": s.done, "total": s.total},
                "cursor": s.cursor,
                "resumed_from": s.resumed_from,
                "started_at": _iso(s.started_at),
                "finished_at": _iso(s.finished_at),
                "elapsed_s": round(s.elapsed_s, 3),
                "error": s.error,
                "summary": s.summary,
            }
            for s in job.stages
        ],
        "error": job.error,
        "result": job.result,
        "callback": job.callback,
        "issue_count": issue_count,
        "issues": issues,
    }
