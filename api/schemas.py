"""The two submissions, `POST /jobs` and `POST /process`, validated at the edge, and the errors of every request.

Built from the field types of api/fields.py and the task data of api/task_data.py (the other routes' requests are
in api/route_requests.py). A request of the wrong shape never reaches a route:
`api.openapi.endpoint` turns the first error into a 400 naming the field, and the OpenAPI document is generated
from these same models. `/jobs` and `/process` are unions by task: each task's member types the data it reads
(CONTRACT §2); a task added to pipeline/plans.py gets a member of its own.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from api.fields import (
    Body,
    Branch,
    Commit,
    Credential,
    HttpUrl,
    Name,
    OptionalName,
    OrgId,
    OriginalBody,
    SourceRef,
)
from api.task_data import DATA_OF, AnyTaskData, TaskData
from pipeline.errors import PermanentError
from pipeline.http.address_policy import outbound_policy, refused_field
from pipeline.http.credentials import split_spec
from pipeline.models import JobSpec, SourceSpec
from pipeline.plans import PLANS, stages_for
from pipeline.settings import Settings
from pipeline.sources.local_roots import LocalPathRefused, option_paths, resolve_local, source_path_of
from pipeline.stores.inputs import FieldTooLarge, bounded_fields

# ------------------------------------------------------------------------------------------------ errors


class BadRequest(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def first_error(exc: ValidationError, *, tagged: bool = False) -> BadRequest:
    """The first problem, naming its field (`data.depth`). `tagged`: the model is a union by task, whose
    errors start with the task's tag, which is not a field of the request."""
    err = exc.errors()[0]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldTooLarge):  # a field inside `options`/`data`: it names itself
        return BadRequest(str(cause), cause.field)
    loc = err["loc"][1:] if tagged and err["loc"] else err["loc"]
    where = ".".join(str(p) for p in loc) or None
    msg = err["msg"]
    if where is None:
        return BadRequest(msg)
    if err["type"] == "missing":
        return BadRequest(f"{where} is required", where)
    return BadRequest(msg if msg.startswith(where) else f"{where}: {msg}", where)


PUSH_URLS = ("repoUrl", "remoteUrl")  # git remotes in a job's options (source stage) besides its source


def refuse_outbound(git: dict[str, Any], http: dict[str, Any], settings: Settings) -> None:
    """400 for a URL field the outbound address policy refuses already (pipeline/http/address_policy.py)."""
    refused = refused_field(outbound_policy(settings), git=git, http=http)
    if refused is not None:
        raise BadRequest(f"{refused[0]}: {refused[1]}", refused[0])


def refuse_server_paths(task: str, named: list[tuple[tuple[str, ...], str]], settings: Settings) -> None:
    """Paths on the server a request names are taken only under REPOBUILD_LOCAL_SOURCE_ROOTS: else a 400 naming
    the field, never the path. A task that cannot run reads none."""
    for where, path in named if task in PLANS else ():
        try:
            resolve_local(path, settings.local_source_roots, ".".join(where))
        except LocalPathRefused as exc:
            raise BadRequest(str(exc), exc.field) from None


def _plain(value: Any) -> dict[str, Any]:
    return value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else dict(value or {})


def source_spec(value: str | None, branch: str | None, commit: str | None, depth: int | None,
                subfolder: str | None = None) -> SourceSpec | None:
    """A source string → SourceSpec; its credentials are split off later, with the rest of the job (split_spec)."""
    if not value:
        return None
    if "://" in value or value.startswith("git@"):
        return SourceSpec(url=value, branch=branch, commit=commit, depth=depth, subfolder=subfolder)
    return SourceSpec(path=value, branch=branch, commit=commit, depth=depth, subfolder=subfolder)


# ------------------------------------------------------------------------------------------------ unions by task


TASKS = tuple(PLANS)
OTHER = "other"


def _task_tag(value: Any) -> str:
    task = value.get("task") if isinstance(value, dict) else getattr(value, "task", None)
    return task if isinstance(task, str) and task in PLANS else OTHER


def _by_task(base: type[BaseModel], data_field: str, other: type[BaseModel], *, show_other: bool) -> Any:
    """A union of `base` with one member per task (its `task` a constant, its `data_field` that task's data),
    chosen by `task`; a task not known here takes `other`."""
    members: list[Any] = []
    for task in TASKS:
        data = DATA_OF.get(task, TaskData)
        name = "".join(part.title() for part in task.split("-")) + base.__name__.removesuffix("Fields")
        model = create_model(name, __base__=base, __doc__=f"{task}: {' → '.join(PLANS[task])}",
                             task=(Literal[task], ...),
                             **{data_field: (data, Field(default_factory=data))})  # type: ignore[call-overload]
        members.append(Annotated[model, Tag(task)])
    hidden = () if show_other else (SkipJsonSchema(),)  # type: ignore[type-arg]
    members.append(Annotated[(other, Tag(OTHER), *hidden)])
    return Annotated[Union[tuple(members)], Discriminator(_task_tag)]  # noqa: UP007 - built at run time


class TaskUnion(RootModel[Any]):
    """A request whose shape depends on its task; its errors start with the task's tag."""

    tagged: ClassVar[bool] = True

    def to_spec(self) -> tuple[JobSpec, dict[str, str]]:
        spec: tuple[JobSpec, dict[str, str]] = self.root.to_spec()
        return spec

    def refuse_outbound(self, settings: Settings) -> None:
        self.root.refuse_outbound(settings)

    def refuse_server_paths(self, settings: Settings) -> None:
        self.root.refuse_server_paths(settings)


# ------------------------------------------------------------------------------------------------ POST /jobs


class JobFields(Body):
    """`POST /jobs`, the native API."""

    model_config = ConfigDict(extra="forbid")

    task: str
    source: SourceRef | None = None
    branch: Branch = None
    commit: Commit = None
    depth: int | None = Field(default=None, ge=1)
    token: Credential | None = None
    options: TaskData = Field(default_factory=TaskData)
    callback_url: HttpUrl | None = None
    job_id: Name | None = None
    project_id: OptionalName = None
    org_id: OrgId = None

    @field_validator("options", mode="before")
    @classmethod
    def _bounded_options(cls, v: Any) -> Any:
        # What a job keeps of its body is bounded; an absurd field is refused here, by name.
        return bounded_fields(v, "options") if isinstance(v, dict) else v

    def refuse_server_paths(self, settings: Settings) -> None:
        source = source_path_of(self.source) if self.source else None
        named = [(("options", *where), path) for where, path in option_paths(_plain(self.options))]
        refuse_server_paths(self.task, ([(("source",), source)] if source else []) + named, settings)

    def refuse_outbound(self, settings: Settings) -> None:
        options = _plain(self.options)
        refuse_outbound({"source": self.source, **{f"options.{k}": options.get(k) for k in PUSH_URLS}},
                        {"callback_url": self.callback_url}, settings)

    def to_spec(self) -> tuple[JobSpec, dict[str, str]]:
        options = self.options.model_dump(exclude_unset=True)
        source = source_spec(self.source, self.branch, self.commit, self.depth, options.get("repositoryFolder"))
        spec = JobSpec(job_id=self.job_id or uuid.uuid4().hex, task=self.task, source=source, options=options,
                       callback_url=self.callback_url, project_id=self.project_id, org_id=self.org_id)
        # every credential in any field goes to the job's secrets, never into stored state
        return split_spec(spec, self.token)


class UnknownTaskJob(JobFields):
    """The native API refuses a task it cannot run, up front (the original's route accepts it)."""

    options: dict[str, Any] = Field(default_factory=dict)  # type: ignore[assignment]

    @field_validator("task")
    @classmethod
    def _known(cls, task: str) -> str:
        try:
            stages_for(task)
        except PermanentError as exc:
            raise PydanticCustomError("unknown_task", "{problem}; one of {tasks}",
                                      {"problem": str(exc), "tasks": ", ".join(TASKS)}) from None
        return task


JobRequest = create_model("JobRequest", __base__=TaskUnion, __doc__=JobFields.__doc__,
                          root=(_by_task(JobFields, "options", UnknownTaskJob, show_other=False), ...))


# ------------------------------------------------------------------------------------------------ POST /process

MISSING_FIELDS = "Missing required fields: jobId, task, and callbackUrl are required"
REQUIRED = ("jobId", "task", "callbackUrl")


class ProcessFields(OriginalBody):
    """`POST /process`: the original service's body, `data` as each task reads it (CONTRACT §2)."""

    model_config = ConfigDict(extra="allow")

    jobId: Name
    task: Annotated[str, Field(min_length=1, max_length=64, json_schema_extra={"not": {"enum": list(TASKS)}})]
    data: TaskData = Field(default_factory=TaskData)
    callbackUrl: HttpUrl

    @field_validator("data", mode="before")
    @classmethod
    def _data_object(cls, v: Any) -> Any:
        return {} if v is None else bounded_fields(v, "data") if isinstance(v, dict) else v

    def refuse_server_paths(self, settings: Settings) -> None:
        named = [(("data", *where), path) for where, path in option_paths(_plain(self.data))]
        refuse_server_paths(self.task, named, settings)

    def refuse_outbound(self, settings: Settings) -> None:
        info = self.data.repoInfo
        refuse_outbound({**{f"data.{k}": getattr(self.data, k) for k in PUSH_URLS},
                         "data.repoInfo.path": info.path if info else None},
                        {"callbackUrl": self.callbackUrl}, settings)

    def to_spec(self) -> tuple[JobSpec, dict[str, str]]:
        data = self.data.model_dump(exclude_unset=True)
        # pop both: a token under either name must not stay in the stored options
        git_token, github_token = data.pop("gitToken", None), data.pop("githubToken", None)
        info = self.data.repoInfo
        where = self.data.repoUrl or (info.path if info else None)
        source = source_spec(where, self.data.branch, self.data.commit, self.data.depth or None,
                             self.data.repositoryFolder)
        spec = JobSpec(job_id=self.jobId, task=self.task, source=source, options=data, callback_url=self.callbackUrl,
                       project_id=self.data.projectId, org_id=self.data.orgId)
        return split_spec(spec, git_token or github_token)


class UnknownTaskProcess(ProcessFields):
    data: AnyTaskData = Field(default_factory=AnyTaskData)


class _ProcessUnion(TaskUnion):
    @model_validator(mode="before")
    @classmethod
    def _required(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not all(value.get(k) for k in REQUIRED):
            raise PydanticCustomError("missing_fields", MISSING_FIELDS)
        return value


ProcessRequest = create_model("ProcessRequest", __base__=_ProcessUnion, __doc__=ProcessFields.__doc__,
                              root=(_by_task(ProcessFields, "data", UnknownTaskProcess, show_other=True), ...))


