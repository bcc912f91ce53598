"""fetch: the source repository into the artifact store (SOURCE_TREE), its commit in SOURCE_INFO.

A git URL (http(s)://, with an optional token) or a local git repository (a path or a file:// URL, under
REPOBUILD_LOCAL_SOURCE_ROOTS: local_roots.py) is cloned with dulwich, so only committed content counts; a plain
local folder is copied with its mtimes. Symlinks are never followed out of the tree (symlinks.py).
A job whose plan starts with the `source` stage takes the repository that stage made instead (see source.py).
The tree is replaced in one rename, so a retried fetch after a crash starts clean.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.catalog import GIT_DATES, MADE_REPOSITORY, MADE_TREE, SOURCE_INFO, SOURCE_TREE
from pipeline.errors import PermanentError, TransientError
from pipeline.http.address_policy import outbound_policy
from pipeline.http.credentials import original_key, restore, split_url
from pipeline.http.token_scope import git_token
from pipeline.markdown.discovery import is_post_name, media_ext
from pipeline.models import Issue, SourceSpec, StageResult
from pipeline.sources.git import clone, head_commit
from pipeline.sources.git_checkout import SkippedEntry
from pipeline.sources.git_history import GitDates, file_dates
from pipeline.sources.local_roots import existing_local, local_path_of, without_paths
from pipeline.sources.symlinks import contain_symlinks, copy_folder
from pipeline.stages.context import StageContext


def _count(tree: Path) -> tuple[int, int]:
    files = [p for p in tree.rglob("*") if p.is_file() and ".git" not in p.relative_to(tree).parts]
    return len(files), sum(p.stat().st_size for p in files)


def _repository(ctx: StageContext) -> tuple[SourceSpec, str | None, Path | None]:
    """What to clone or copy, the token for it, and the folder on this machine it is (None for a remote URL):
    the repository the `source` stage made, else the job's source (with the credentials its URL came with,
    which the spec does not keep).

    The made one wins when both exist: for wp-import the job's `repoUrl` is where that repository was pushed.
    The token is one the job may send to that host (pipeline/http/token_scope.py), or None.
    """
    made_key = MADE_REPOSITORY.key(ctx.job_id)
    if not ctx.artifacts.exists(made_key):
        source = ctx.spec.source
        if source is None or not (source.path or source.url):
            raise PermanentError("the job has no source (a path or a git URL)")
        if source.url:
            source = source.model_copy(update={"url": restore(source.url, ctx.secret(original_key("source")))})
        return source, git_token(ctx, source.url) if source.url else None, _local_folder(ctx, source)
    made = ctx.artifacts.get_json(made_key)
    pinned = {"branch": made.get("branch"), "commit": made.get("commit")}
    if made.get("kind") == "git-tree":
        tree = ctx.artifacts.tree(MADE_TREE.key(ctx.job_id))  # the artifact store's own: no root to check
        return SourceSpec(path=str(tree), **pinned), None, tree
    if made.get("kind") == "url" and made.get("url"):
        made_url = SourceSpec(url=made["url"], **pinned)
        return made_url, git_token(ctx, made["url"]), _local_folder(ctx, made_url)
    raise PermanentError(f"the source stage made a repository of unknown kind {made.get('kind')!r}")


def _local_folder(ctx: StageContext, source: SourceSpec) -> Path | None:
    """The folder on this machine that a path or file:// URL names, under the roots as this worker has them now
    (they, or the disk, may have changed since enqueue); None for a remote URL."""
    where = source.path or local_path_of(source.url or "")
    if where is None:
        return None
    return existing_local(where, ctx.settings.local_source_roots, "source", folder=True)


@contextmanager
def _paths_hidden(ctx: StageContext, folder: Path | None) -> Iterator[None]:
    """Errors of the block name no path of this machine: not the source folder's real path, not the artifact
    store's; a failure to write the tree is this machine's, worth another try, and says only what failed."""
    settings = ctx.settings
    names = {str(folder or ""): "the source folder", settings.artifacts: "the artifact store",
             settings.artifacts_cache or "": "the artifact cache",
             str(Path(settings.temp_dir) / "repobuild"): "the work folder"}
    try:
        yield
    except TransientError as exc:
        raise TransientError(without_paths(str(exc), names)) from exc
    except PermanentError as exc:
        raise PermanentError(without_paths(str(exc), names)) from exc
    except OSError as exc:
        raise TransientError(f"cannot write the source tree: {exc.strerror or type(exc).__name__}") from exc


def run(ctx: StageContext) -> StageResult:
    info_key = SOURCE_INFO.key(ctx.job_id)
    if ctx.artifacts.exists(info_key):
        done = ctx.artifacts.get_json(info_key)
        return StageResult.done(commit=done.get("commit"), files=done.get("files"), bytes=done.get("bytes"))
    source, token, folder = _repository(ctx)
    kind, commit, problems = "git", None, []
    skipped: list[SkippedEntry] = []
    with _paths_hidden(ctx, folder), ctx.artifacts.write_tree(SOURCE_TREE.key(ctx.job_id)) as staging:
        if folder is None:
            commit = clone(source.url or "", staging / "repo", branch=source.branch, commit=source.commit,
                           depth=source.depth, token=token, skipped=skipped, policy=outbound_policy(ctx.settings),
                           timeout_s=ctx.settings.git_timeout_s)
        elif source.url or (folder / ".git").exists():
            commit = clone(str(folder), staging / "repo", branch=source.branch, commit=source.commit,
                           depth=source.depth if source.url else None, skipped=skipped)
        else:
            kind = "folder"
            problems = copy_folder(folder, staging / "repo")
        # the history is read while .git is still there: the tree handed on has none
        dates = file_dates(staging / "repo", commit, _dated) if commit else None
        # the clone lands in a subfolder so dulwich can create it; the tree is its content
        for item in (staging / "repo").iterdir():
            if item.name != ".git":
                item.rename(staging / item.name)
        shutil.rmtree(staging / "repo")
        # one rule for the links of a checkout and of a copied folder: none is followed out of the tree
        problems += contain_symlinks(staging)
        files, size = _count(staging)
    for problem in problems:
        ctx.record_issue(Issue(stage=ctx.stage, path=problem.path, message=problem.message,
                               severity=problem.severity))
    info = {"kind": kind, "url": split_url(source.url).url if source.url else None, "path": source.path,
            "branch": source.branch, "commit": commit, "files": files, "bytes": size}
    for entry in skipped:
        ctx.record_issue(Issue(stage="fetch", path=entry.path, message=f"not checked out: {entry.reason}",
                               kind="checkout"))
    if dates is not None:
        _record_dates(ctx, dates, source.depth)
    ctx.artifacts.put_json(info_key, info)
    ctx.progress(files, files)
    return StageResult.done(commit=commit, files=files, bytes=size)


def _dated(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return is_post_name(name) or media_ext(name) is not None


def _record_dates(ctx: StageContext, dates: GitDates, depth: int | None) -> None:
    ctx.artifacts.put_json(GIT_DATES.key(ctx.job_id), dates.to_json())
    without = ("so posts and media get no gitCreated/gitModified and a post's date comes from its frontmatter, "
               "file name or path only")
    if dates.shallow:
        cut = f" (depth {depth})" if depth else ""
        ctx.record_issue(Issue(stage=ctx.stage, path="", severity="warning", kind="git-history",
                               message=f"shallow clone{cut}: the history is cut, {without}; clone without a depth "
                                       "for git dates"))
    elif dates.missing:
        ctx.record_issue(Issue(stage=ctx.stage, path="", severity="warning", kind="git-history",
                               message=f"the history cannot be read (object {dates.missing} is missing), {without}"))


__all__ = ["run", "head_commit"]
