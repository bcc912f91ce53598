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
from pipeline.http.credentials import GIT_TOKEN, original_key, restore, split_url
from pipeline.models import SourceSpec, StageResult
from pipeline.sources.git import clone, head_commit
from pipeline.stages.context import StageContext


def _count(tree: Path) -> tuple[int, int]:
    files = [p for p in tree.rglob("*") if p.is_file() and ".git" not in p.relative_to(tree).parts]
    return len(files), sum(p.stat().st_size for p in files)


def _repository(ctx: StageContext) -> tuple[SourceSpec, str | None]:
    """What to clone or copy, and the token for it: the repository the `source` stage made, else the job's source
    (with the credentials its URL came with, which the spec does not keep).

    The made one wins when both exist: for wp-import the job's `repoUrl` is where that repository was pushed.
    """
    made_key = MADE_REPOSITORY.key(ctx.job_id)
    if not ctx.artifacts.exists(made_key):
        source = ctx.spec.source
        if source is None or not (source.path or source.url):
            raise PermanentError("the job has no source (a path or a git URL)")
        if source.url:
            source = source.model_copy(update={"url": restore(source.url, ctx.secret(original_key("source")))})
        return source, ctx.secret(GIT_TOKEN)
    made = ctx.artifacts.get_json(made_key)
    pinned = {"branch": made.get("branch"), "commit": made.get("commit")}
    if made.get("kind") == "git-tree":
        return SourceSpec(path=str(ctx.artifacts.tree(MADE_TREE.key(ctx.job_id))), **pinned), None
    if made.get("kind") == "url" and made.get("url"):
        return SourceSpec(url=made["url"], **pinned), ctx.secret(GIT_TOKEN)
    raise PermanentError(f"the source stage made a repository of unknown kind {made.get('kind')!r}")


def run(ctx: StageContext) -> StageResult:
    info_key = SOURCE_INFO.key(ctx.job_id)
    if ctx.artifacts.exists(info_key):
        done = ctx.artifacts.get_json(info_key)
        return StageResult.done(commit=done.get("commit"), files=done.get("files"), bytes=done.get("bytes"))
    source, token = _repository(ctx)
    kind, commit = "git", None
    with ctx.artifacts.write_tree(SOURCE_TREE.key(ctx.job_id)) as staging:
        if source.url:
            commit = clone(source.url, staging / "repo", branch=source.branch, commit=source.commit,
                           depth=source.depth, token=token)
        else:
            src = Path(source.path or "")
            if not src.exists():
                raise PermanentError(f"source path {source.path} does not exist")
            if (src / ".git").exists():
                commit = clone(str(src.resolve()), staging / "repo", branch=source.branch, commit=source.commit)
            else:
                kind = "folder"
                shutil.copytree(src, staging / "repo", ignore=shutil.ignore_patterns(".git"))
        # the clone lands in a subfolder so dulwich can create it; the tree is its content
        for item in (staging / "repo").iterdir():
            if item.name != ".git":
                item.rename(staging / item.name)
        shutil.rmtree(staging / "repo")
        files, size = _count(staging)
    info = {"kind": kind, "url": split_url(source.url).url if source.url else None, "path": source.path,
            "branch": source.branch, "commit": commit, "files": files, "bytes": size}
    ctx.artifacts.put_json(info_key, info)
    ctx.progress(files, files)
    return StageResult.done(commit=commit, files=files, bytes=size)


__all__ = ["run", "head_commit"]
