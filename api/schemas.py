"""Request bodies, validated at the edge, and the job view the API returns."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from pipeline.models import JSON, JobSpec, SourceSpec
from pipeline.plans import PLANS
from pipeline.sources.local_roots import LocalPathRefused, option_paths, resolve_local, source_path_of
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


def split_credentials(url: str) -> tuple[str, str | None]:
    """`https://user:token@host/x` → (`https://host/x`, token): a token never reaches stored job state."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not (parts.username or parts.password):
        return url, None
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    token = parts.password or parts.username
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), token


def source_spec(value: str | None, branch: str | None, commit: str | None, depth: int | None,
            subfolder: str | None = None) -> tuple[SourceSpec | None, str | None]:
    """A source string → (SourceSpec, token found in its URL)."""
    if not value:
        return None, None
    if "://" in value or value.startswith("git@"):
        url, token = split_credentials(value)
        return SourceSpec(url=url, branch=branch, commit=commit, depth=depth, subfolder=subfolder), token
    return SourceSpec(path=value, branch=branch, commit=commit, depth=depth, subfolder=subfolder), None


def strip_push_credentials(options: dict[str, Any], names: tuple[str, ...]) -> list[str | None]:
    """Push targets (wp-import, brief) may carry credentials in their URLs too: stripped in place, returned."""
    found: list[str | None] = []
    for name in names:
        if isinstance(options.get(name), str):
            options[name], token = split_credentials(options[name])
            found.append(token)
    return found


def secrets_of(*tokens: str | None) -> dict[str, str]:
    for token in tokens:
        if token:
            return {"git_token": token}
    return {}


def refuse_server_paths(title: str, task: str, named: Iterable[tuple[tuple[str, ...], str]],
                        info: ValidationInfo) -> None:
    """Paths on the server a request names are taken only under REPOBUILD_LOCAL_SOURCE_ROOTS (the app's settings,
    in the validation context; none without them): else a 400 naming the field. A task that cannot run reads none."""
    settings = (info.context or {}).get("settings")
    roots = settings.local_source_roots if settings is not None else ()
    for where, path in named if task in PLANS else ():
        try:
            resolve_local(path, roots, ".".join(where))
        except LocalPathRefused as exc:
            error = PydanticCustomError("local_path", "{problem}", {"problem": exc.problem})
            raise ValidationError.from_exception_data(title, [InitErrorDetails(type=error, loc=where, input=path)],
                                                      ) from None


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

    @model_validator(mode="after")
    def _server_paths(self, info: ValidationInfo) -> JobRequest:
        source = source_path_of(self.source) if self.source else None
        named = [(("options", *where), path) for where, path in option_paths(self.options)]
        refuse_server_paths("JobRequest", self.task, ([(("source",), source)] if source else []) + named, info)
        return self

    def to_spec(self) -> tuple[JobSpec, dict[str, str]]:
        source, url_token = source_spec(self.source, self.branch, self.commit, self.depth,
                                    self.options.get("repositoryFolder"))
        options = dict(self.options)
        push_tokens = strip_push_credentials(options, ("repoUrl", "remoteUrl"))
        spec = JobSpec(
            job_id=self.job_id or uuid.uuid4().hex,
            task=self.task,
            source=source,
            options=options,
            callback_url=self.callback_url,
            project_id=self.project_id,
            org_id=self.org_id,
        )
        return spec, secrets_of(self.token, url_token, *push_tokens)


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

    @model_validator(mode="after")
    def _server_paths(self, info: ValidationInfo) -> ProcessRequest:
        named = [(("data", *where), path) for where, path in option_paths(self.data)]
        refuse_server_paths("ProcessRequest", self.task, named, info)
        return self

    def to_spec(self) -> tuple[JobSpec, dict[str, str]]:
        data = dict(self.data)
        # pop both: a token under either name must not stay in the stored options
        git_token, github_token = data.pop("gitToken", None), data.pop("githubToken", None)
        token = git_token or github_token
        repo_info = data.get("repoInfo") or {}
        where = data.get("repoUrl") or (repo_info.get("path") if isinstance(repo_info, dict) else None)
        depth = data.get("depth")
        source, url_token = source_spec(where, data.get("branch"), data.get("commit"), int(depth) if depth else None,
                                    data.get("repositoryFolder"))
        if source is not None and source.url and isinstance(data.get("repoUrl"), str):
            data["repoUrl"] = source.url  # without the credentials it may have carried
        push_tokens = strip_push_credentials(data, ("remoteUrl",))
        spec = JobSpec(
            job_id=self.jobId,
            task=self.task,
            source=source,
            options=data,
            callback_url=self.callbackUrl,
            project_id=data.get("projectId"),
            org_id=data.get("orgId"),
        )
        return spec, secrets_of(str(token) if token else None, url_token, *push_tokens)


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
