"""fetch: the source repository into the artifact store (`tree`), its commit in `source.json`.

A git URL (file://, http(s)://, with an optional token) or a local git repository is cloned with
dulwich, so only committed content counts; a plain local folder is copied with its mtimes.
The tree is replaced in one rename, so a retried fetch after a crash starts clean.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.errors import PermanentError
from pipeline.models import StageResult
from pipeline.sources.git import clone, head_commit, mask_url
from pipeline.stages.context import StageContext


def _count(tree: Path) -> tuple[int, int]:
    files = [p for p in tree.rglob("*") if p.is_file() and ".git" not in p.relative_to(tree).parts]
    return len(files), sum(p.stat().st_size for p in files)


def run(ctx: StageContext) -> StageResult:
    source = ctx.spec.source
    if source is None or not (source.path or source.url):
        raise PermanentError("the job has no source (a path or a git URL)")
    info_key = ctx.key("source.json")
    if ctx.artifacts.exists(info_key):
        done = ctx.artifacts.get_json(info_key)
        return StageResult.done(commit=done.get("commit"), files=done.get("files"), bytes=done.get("bytes"))
    token = ctx.secret("git_token")
    kind, commit = "git", None
    with ctx.artifacts.write_tree(ctx.key("tree")) as staging:
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
    info = {"kind": kind, "url": mask_url(source.url) if source.url else None, "path": source.path,
            "branch": source.branch, "commit": commit, "files": files, "bytes": size}
    ctx.artifacts.put_json(info_key, info)
    ctx.progress(files, files)
    return StageResult.done(commit=commit, files=files, bytes=size)


__all__ = ["run", "head_commit"]
