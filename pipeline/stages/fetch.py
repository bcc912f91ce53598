"""fetch: the source repository into the artifact store (SOURCE_TREE), its commit in SOURCE_INFO.

A git URL (file://, http(s)://, with an optional token) or a local git repository is cloned with
dulwich, so only committed content counts; a plain local folder is copied with its mtimes.
A job whose plan starts with the `source` stage takes the repository that stage made instead (see source.py).
The tree is replaced in one rename, so a retried fetch after a crash starts clean.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.catalog import MADE_REPOSITORY, MADE_TREE, SOURCE_INFO, SOURCE_TREE
from pipeline.errors import PermanentError
from pipeline.http.address_policy import outbound_policy
from pipeline.http.token_scope import git_token
from pipeline.models import Issue, SourceSpec, StageResult
from pipeline.sources.git import clone, head_commit, mask_url
from pipeline.sources.git_checkout import SkippedEntry
from pipeline.stages.context import StageContext


def _count(tree: Path) -> tuple[int, int]:
    files = [p for p in tree.rglob("*") if p.is_file() and ".git" not in p.relative_to(tree).parts]
    return len(files), sum(p.stat().st_size for p in files)


def _repository(ctx: StageContext) -> tuple[SourceSpec, str | None]:
    """What to clone or copy, and the token for it: the repository the `source` stage made, else the job's source.

    The made one wins when both exist: for wp-import the job's `repoUrl` is where that repository was pushed.
    The token is one the job may send to that host (pipeline/http/token_scope.py), or None.
    """
    made_key = MADE_REPOSITORY.key(ctx.job_id)
    if not ctx.artifacts.exists(made_key):
        source = ctx.spec.source
        if source is None or not (source.path or source.url):
            raise PermanentError("the job has no source (a path or a git URL)")
        return source, git_token(ctx, source.url) if source.url else None
    made = ctx.artifacts.get_json(made_key)
    pinned = {"branch": made.get("branch"), "commit": made.get("commit")}
    if made.get("kind") == "git-tree":
        return SourceSpec(path=str(ctx.artifacts.tree(MADE_TREE.key(ctx.job_id))), **pinned), None
    if made.get("kind") == "url" and made.get("url"):
        return SourceSpec(url=made["url"], **pinned), git_token(ctx, made["url"])
    raise PermanentError(f"the source stage made a repository of unknown kind {made.get('kind')!r}")


def run(ctx: StageContext) -> StageResult:
    info_key = SOURCE_INFO.key(ctx.job_id)
    if ctx.artifacts.exists(info_key):
        done = ctx.artifacts.get_json(info_key)
        return StageResult.done(commit=done.get("commit"), files=done.get("files"), bytes=done.get("bytes"))
    source, token = _repository(ctx)
    kind, commit = "git", None
    skipped: list[SkippedEntry] = []
    with ctx.artifacts.write_tree(SOURCE_TREE.key(ctx.job_id)) as staging:
        if source.url:
            commit = clone(source.url, staging / "repo", branch=source.branch, commit=source.commit,
                           depth=source.depth, token=token, skipped=skipped, policy=outbound_policy(ctx.settings),
                           timeout_s=ctx.settings.git_timeout_s)
        else:
            src = Path(source.path or "")
            if not src.exists():
                raise PermanentError(f"source path {source.path} does not exist")
            if (src / ".git").exists():
                commit = clone(str(src.resolve()), staging / "repo", branch=source.branch, commit=source.commit,
                               skipped=skipped)
            else:
                kind = "folder"
                shutil.copytree(src, staging / "repo", ignore=shutil.ignore_patterns(".git"))
        # the clone lands in a subfolder so dulwich can create it; the tree is its content
        for item in (staging / "repo").iterdir():
            if item.name != ".git":
                item.rename(staging / item.name)
        shutil.rmtree(staging / "repo")
        files, size = _count(staging)
    info = {"kind": kind, "url": mask_url(source.url) if source.url else None, "path": source.path,
            "branch": source.branch, "commit": commit, "files": files, "bytes": size}
    for entry in skipped:
        ctx.record_issue(Issue(stage="fetch", path=entry.path, message=f"not checked out: {entry.reason}",
                               kind="checkout"))
    ctx.artifacts.put_json(info_key, info)
    ctx.progress(files, files)
    return StageResult.done(commit=commit, files=files, bytes=size)


__all__ = ["run", "head_commit"]
