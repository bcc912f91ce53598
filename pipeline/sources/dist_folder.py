"""A dist folder named in the request: the input of the original's tasks that start from a built bundle
(build-database, enrich-data, publish-r2, publish-build-files).

It is a folder on this machine that build-database and enrich-data write into, so it is taken only under
REPOBUILD_LOCAL_SOURCE_ROOTS (local_roots.py), checked by each stage right before it reads or writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import PermanentError
from pipeline.sources.local_roots import existing_local

FIELD = "distFolder"


def dist_folder(options: dict[str, Any], roots: Sequence[str]) -> Path | None:
    """`data.assets.distFolder`, `data.repoInfo.distPath` or `data.distFolder`, the original's spellings: the real
    folder, under one of `roots`; None when the options name none."""
    assets, repo_info = options.get("assets"), options.get("repoInfo")
    folder = ((assets.get("distFolder") if isinstance(assets, dict) else None)
              or (repo_info.get("distPath") if isinstance(repo_info, dict) else None) or options.get("distFolder"))
    return existing_local(str(folder), roots, FIELD, folder=True) if folder else None


def read_dist_json(folder: Path, name: str, *, required: str | None = None) -> Any:
    """A JSON file of the folder; None when absent, unless `required` says what needs it. Errors name the file
    by its name in the folder, never by its path on this machine."""
    path = folder / name
    if not path.resolve().is_relative_to(folder):
        raise PermanentError(f"{FIELD}: {name} is a link to outside the folder; not followed")
    if not path.is_file():
        if required:
            raise PermanentError(f"{FIELD}: {name} not found: {required}")
        return None
    try:
        return json.loads(path.read_bytes())
    except ValueError as exc:
        raise PermanentError(f"{FIELD}: {name} is not valid JSON: {exc}") from exc
