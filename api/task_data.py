"""What each task reads of a job: `options` of `POST /jobs`, `data` of `POST /process` (CONTRACT §2).

A task's member of the request unions (api/schemas.py) carries its own model from `DATA_OF`; the fields read are
typed, anything else is kept as sent.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from api.fields import (
    Branch,
    Commit,
    Credential,
    OptionalName,
    OrgId,
    OutboundUrl,
    ServerPath,
    SourceRef,
    Text,
    blank_is_none,
)


class Open(BaseModel):
    """An object of the original's `data`: the fields read here are typed, anything else is kept as sent."""

    model_config = ConfigDict(extra="allow")


class RepoInfo(Open):
    path: SourceRef | None = None
    distPath: ServerPath | None = None


class Assets(Open):
    distFolder: ServerPath | None = None


class TaskData(Open):
    """`data` of `/process`, `options` of `/jobs`: what every task may read (CONTRACT §2)."""

    repoUrl: SourceRef | None = None
    repoInfo: RepoInfo | None = None
    branch: Branch = None
    commit: Commit = None
    depth: Annotated[Annotated[int, Field(ge=0)] | None, BeforeValidator(blank_is_none)] = None
    repositoryFolder: Text | None = None
    mediaPrefix: Text | None = None
    notePrefix: Text | None = None
    domain: Text | None = None
    skipEmbeddings: bool | None = None
    includeDrafts: bool | None = None  # drafts (draft: true, published: false, _drafts/) are left out unless set
    previousRev: OptionalName = None
    projectId: OptionalName = None
    orgId: OrgId = None
    gitToken: Credential | None = None
    githubToken: Credential | None = None
    remoteUrl: OutboundUrl | None = None


class DistData(TaskData):
    """Tasks that start from a built bundle (build-database, enrich-data, publish-*)."""

    assets: Assets | None = None
    distFolder: ServerPath | None = None


class PushData(TaskData):
    """Tasks that make a repository and push it to `repoUrl`/`remoteUrl`, or to a new GitHub `repoName`."""

    repoName: Text | None = None
    owner: Text | None = None
    private: bool | None = None


class WpImportData(PushData):
    # the export itself; a large one goes to the artifact store at submission (pipeline.stores.inputs)
    wpXml: str | None = None
    xmlFilePath: ServerPath | None = None


class BriefData(PushData):
    brief: Text | None = None


class TemplateData(TaskData):
    templateRepoUrl: OutboundUrl | None = None
    newRepoName: Text | None = None
    owner: Text | None = None
    description: Text | None = None
    private: bool | None = None


class AnyTaskData(DistData, WpImportData, BriefData, TemplateData):
    """A task not known here: it fails through the callback, but its data is typed all the same."""


DATA_OF: dict[str, type[TaskData]] = {
    **dict.fromkeys(("build-database", "enrich-data", "publish-r2", "publish-build-files"), DistData),
    "wp-import": WpImportData,
    **dict.fromkeys(("generate-project-from-brief", "generate-and-deploy-project"), BriefData),
    **dict.fromkeys(("new-repo-from-template", "process-from-template"), TemplateData),
}
