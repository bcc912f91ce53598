"""source: make the repository a job starts from, for `fetch` to take.

The job's task says how: `wp-import` converts a WordPress export (WXR) to markdown, `generate-project-from-brief`
and `generate-and-deploy-project` have a chat model write a project from a brief, `new-repo-from-template` and
`process-from-template` have GitHub create a repository from a template repository.

Output, MADE_REPOSITORY (catalog.py; what fetch reads), with `kind`:
- "git-tree": the repository, .git folder included, is MADE_TREE, committed on `main`;
  fetch clones it, so only committed content counts. Pushed to `repoUrl` / `remoteUrl` when the job names one.
- "url": a git URL (the repository GitHub made); fetch clones it with the job's git token.
and `branch`, `commit`, `remote` (masked), `files`, and for wp-import the converter's counts (`import`).

wp-import downloads the export's media first, one URL per step with the stage cursor (stages/wp_media.py), then
converts; a re-import to the same remote commits on top of its branch.

Retries: what was made is checkpointed (`result/made.json`) before anything is pushed or waited for, so a retry
after a failed push or a slow GitHub neither calls the chat model nor asks GitHub for the repository again; once
MADE_REPOSITORY exists the stage only answers its summary.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.catalog import MADE_REPOSITORY, MADE_TREE
from pipeline.errors import PermanentError
from pipeline.http.address_policy import outbound_policy
from pipeline.http.credentials import original_key, restore
from pipeline.http.token_scope import git_token
from pipeline.models import JSON, StageResult
from pipeline.sources.brief import generate_files, write_files
from pipeline.sources.git import mask_secrets, mask_url
from pipeline.sources.git_write import commit_tree, fetch_branch, push
from pipeline.sources.github_template import create_repository, generate_from_template, wait_until_cloneable
from pipeline.sources.local_roots import existing_local, local_path_of
from pipeline.sources.wordpress import convert_wxr
from pipeline.stages.context import StageContext
from pipeline.stages.wp_media import download_media, downloaded
from pipeline.stores.artifacts import ArtifactStore
from pipeline.stores.inputs import option_text

MADE = "result/made.json"
BRANCH = "main"
WP_MESSAGE = "Initial import from WordPress"
BRIEF_MESSAGE = "Generate project from brief"
TEMPLATE_READY_TIMEOUT_S = 60.0


def run(ctx: StageContext) -> StageResult:
    result_key = MADE_REPOSITORY.key(ctx.job_id)
    if ctx.artifacts.exists(result_key):
        return StageResult.done(**ctx.artifacts.get_json(result_key))
    maker = MAKERS.get(ctx.spec.task)
    if maker is None:
        raise PermanentError(f"the source stage cannot make a repository for task {ctx.spec.task!r}")
    made_key = ctx.key(MADE)
    if ctx.artifacts.exists(made_key):
        made: JSON = ctx.artifacts.get_json(made_key)
        ctx.log("source: the repository was made by an earlier attempt; delivering it")
    else:
        maybe = maker(ctx)
        if maybe is None:
            return StageResult.more()  # a maker with work in steps (wp-import's media) saved its cursor
        made = maybe
        ctx.artifacts.put_json(made_key, made)
    result = _deliver(ctx, made)
    ctx.artifacts.put_json(result_key, result)
    ctx.progress(1, 1)
    return StageResult.done(**result)


def _deliver(ctx: StageContext, made: JSON) -> JSON:
    """Push a made tree to the job's remote, or wait until GitHub's new repository can be cloned."""
    settings = ctx.settings
    policy = outbound_policy(settings)
    if made["kind"] == "url":
        commit = wait_until_cloneable(made["url"], token=git_token(ctx, made["url"]), branch=made.get("branch"),
                                      timeout=TEMPLATE_READY_TIMEOUT_S, policy=policy,
                                      request_timeout_s=settings.git_timeout_s)
        return {**made, "commit": commit}
    remote = _remote(ctx)
    created = None
    repo_name = _text(ctx.spec.options, "repoName")
    api_token = git_token(ctx, settings.github_api_url)
    if remote is None and repo_name is not None and api_token:
        # The original made a new GitHub repository named `repoName` and pushed there.
        repo = create_repository(repo_name, token=api_token, owner=_text(ctx.spec.options, "owner"),
                                 private=_flag(ctx.spec.options, "private", default=True),
                                 api_base=settings.github_api_url, policy=policy)
        remote, created = repo.clone_url, repo.full_name
        ctx.log(f"source: created the repository {repo.full_name}")
    if remote is None:
        return {**made, "remote": None}
    token = git_token(ctx, remote)
    push(ctx.artifacts.tree(MADE_TREE.key(ctx.job_id)), remote, token=token, branch=made["branch"], policy=policy,
         timeout_s=settings.git_timeout_s)
    ctx.log(f"source: pushed {made['branch']} to {mask_url(remote)}")
    return {**made, "remote": mask_secrets(mask_url(remote), [token]), **({"created": created} if created else {})}


# ------------------------------------------------------------------------------------------------ makers


def _wordpress(ctx: StageContext) -> JSON | None:
    xml = _wxr_bytes(ctx.spec.options, ctx.artifacts, ctx.settings.local_source_roots)
    if not download_media(ctx, xml):
        return None
    with ctx.artifacts.write_tree(MADE_TREE.key(ctx.job_id)) as work:
        report = convert_wxr(xml, work, download=downloaded(ctx), max_bytes=ctx.settings.image_fetch_max_bytes)
        made = _commit(ctx, work, WP_MESSAGE, on_remote=True)
    for issue in report.issues:
        ctx.record_issue(replace(issue, stage=ctx.stage))
    counts = report.to_json()
    del counts["files"]
    counts["issues"] = len(report.issues)
    return {**made, "import": counts}


def _brief(ctx: StageContext) -> JSON:
    brief = option_text(ctx.spec.options.get("brief"), ctx.artifacts, "brief")
    if not isinstance(brief, str) or not brief.strip():
        raise PermanentError(f"{ctx.spec.task} needs `brief` in the job's data: the text the project is written from")
    settings = ctx.settings
    # An OpenAI-compatible server of one's own may want no key; the SDK still insists on one.
    api_key = settings.openai_api_key or ("unused" if settings.openai_base_url else None)
    if api_key is None:
        raise PermanentError("generating a project from a brief needs OPENAI_API_KEY (or REPOBUILD_OPENAI_BASE_URL)")
    files = generate_files(brief, api_key=api_key, base_url=settings.openai_base_url,
                           model=settings.openai_chat_model)
    with ctx.artifacts.write_tree(MADE_TREE.key(ctx.job_id)) as work:
        write_files(files, work)
        return _commit(ctx, work, BRIEF_MESSAGE)


def _template(ctx: StageContext) -> JSON:
    options, task = ctx.spec.options, ctx.spec.task
    template = _required(options, "templateRepoUrl", task)
    name = _required(options, "newRepoName", task)
    token = git_token(ctx, ctx.settings.github_api_url)
    if not token:
        raise PermanentError(f"{task} needs a GitHub token (gitToken) to create {name} from a template")
    repo = generate_from_template(template, name, token=token, owner=_text(options, "owner"),
                                  description=_text(options, "description") or "",
                                  private=_flag(options, "private", default=True), api_base=ctx.settings.github_api_url,
                                  policy=outbound_policy(ctx.settings))
    ctx.log(f"source: GitHub created {repo.full_name} from {template}")
    url = mask_url(repo.clone_url)
    return {"kind": "url", "url": url, "remote": url, "branch": repo.default_branch, "commit": None, "files": None,
            "fullName": repo.full_name, "htmlUrl": repo.html_url}


# A maker returns what it made, or None when it saved its cursor and wants to continue in a fresh task.
MAKERS: dict[str, Callable[[StageContext], JSON | None]] = {
    "wp-import": _wordpress,
    "generate-project-from-brief": _brief,
    "generate-and-deploy-project": _brief,
    "new-repo-from-template": _template,
    "process-from-template": _template,
    "wp-import-local": _wordpress,
    "generate-project-local": _brief,
}


# ------------------------------------------------------------------------------------------------ helpers


def _commit(ctx: StageContext, work: Path, message: str, *, on_remote: bool = False) -> JSON:
    """`on_remote`: commit on top of the job's remote branch when it has one (wp-import, whose work before this is
    checkpointed; a brief is not, and a failing remote here would have the model asked again)."""
    remote = _remote(ctx) if on_remote else None
    if remote is not None:
        # A second import to the same remote goes on top of what is there: a new root commit could not be pushed.
        parent = fetch_branch(work, remote, token=git_token(ctx, remote), branch=BRANCH,
                              policy=outbound_policy(ctx.settings), timeout_s=ctx.settings.git_timeout_s)
        if parent is not None:
            ctx.log(f"source: committing on top of {BRANCH} of {mask_url(remote)} at {parent[:12]}")
    # The job's creation time as the commit's: a conversion redone after a crash gives the same sha, so pushing
    # it again is a no-op rather than a diverged branch.
    sha = commit_tree(work, message, branch=BRANCH, timestamp=int(ctx.spec.created_at))
    files = sum(1 for p in work.rglob("*") if p.is_file() and ".git" not in p.relative_to(work).parts)
    ctx.log(f"source: committed {files} files as {sha[:12]} on {BRANCH}")
    return {"kind": "git-tree", "branch": BRANCH, "commit": sha, "files": files}


def _wxr_bytes(options: dict[str, Any], artifacts: ArtifactStore, roots: Sequence[str]) -> bytes:
    encoded = option_text(options.get("wpXml"), artifacts, "wpXml")
    if encoded is not None:
        if not isinstance(encoded, str) or not encoded.strip():
            raise PermanentError("wpXml must be the WordPress export as a non-empty base64 string")
        try:
            return base64.b64decode("".join(encoded.split()), validate=True)
        except binascii.Error as exc:
            raise PermanentError(f"wpXml is not valid base64: {exc}") from None
    path = options.get("xmlFilePath")
    if path is not None:
        if not isinstance(path, str) or not path.strip():
            raise PermanentError("xmlFilePath must be the path of a WordPress export file")
        try:
            return existing_local(path, roots, "xmlFilePath", folder=False).read_bytes()
        except OSError as exc:
            raise PermanentError(f"xmlFilePath: cannot be read: {exc.strerror or type(exc).__name__}") from None
    raise PermanentError("wp-import needs the WordPress export: `wpXml` (base64) or `xmlFilePath` in the job's data")


def _remote(ctx: StageContext) -> str | None:
    """The URL to push to, with the credentials it came with (the spec keeps it without them); a folder on this
    machine only under the roots, since a push writes."""
    for name in ("repoUrl", "remoteUrl"):
        value = ctx.spec.options.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise PermanentError(f"{name} must be a git URL to push to")
        if value:
            remote = restore(str(value).strip(), ctx.secret(original_key(f"options.{name}")))
            local = local_path_of(remote)
            if local is not None:
                existing_local(local, ctx.settings.local_source_roots, name, folder=True)
            return remote
    return None


def _text(options: dict[str, Any], name: str) -> str | None:
    value = options.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PermanentError(f"`{name}` must be a string, got {type(value).__name__}")
    return value.strip() or None


def _required(options: dict[str, Any], name: str, task: str) -> str:
    value = _text(options, name)
    if value is None:
        raise PermanentError(f"{task} needs `{name}` in the job's data")
    return value


def _flag(options: dict[str, Any], name: str, *, default: bool) -> bool:
    value = options.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "1", "yes", "false", "0", "no"}:
        return value.strip().lower() in {"true", "1", "yes"}
    raise PermanentError(f"`{name}` must be true or false, got {value!r}")
