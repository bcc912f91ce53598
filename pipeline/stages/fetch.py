"""fetch (interim: local folders only, until the git source lands)."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.errors import PermanentError
from pipeline.models import StageResult
from pipeline.stages.context import StageContext


def run(ctx: StageContext) -> StageResult:
    source = ctx.spec.source
    if source is None or source.path is None:
        raise PermanentError("only local folders are supported by this interim fetch")
    src = Path(source.path)
    if not src.is_dir():
        raise PermanentError(f"source path {source.path} does not exist")
    with ctx.artifacts.write_tree(ctx.key("tree")) as d:
        shutil.copytree(src, d, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git"))
    ctx.artifacts.put_json(ctx.key("source.json"), {"kind": "folder", "path": str(src), "commit": None})
    return StageResult.done()
