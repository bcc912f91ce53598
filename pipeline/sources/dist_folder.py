"""A dist folder named in the request: the input of the original's tasks that start from a built bundle
(build-database, enrich-data, publish-r2, publish-build-files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import PermanentError


def dist_folder(options: dict[str, Any]) -> Path | None:
    """`data.assets.distFolder`, `data.repoInfo.distPath` or `data.distFolder`, the original's spellings."""
    assets, repo_info = options.get("assets"), options.get("repoInfo")
    folder = ((assets.get("distFolder") if isinstance(assets, dict) else None)
              or (repo_info.get("distPath") if isinstance(repo_info, dict) else None) or options.get("distFolder"))
    return Path(str(folder)) if folder else None


def read_dist_json(folder: Path, name: str, *, required: str | None = None) -> Any:
    """A JSON file of the folder; None when absent, unless `required` says what needs it."""
    path = folder / name
    if not path.is_file():
        if required:
            raise PermanentError(f"{path} not found: {required}")
        return None
    try:
        return json.loads(path.read_bytes())
    except ValueError as exc:
        raise PermanentError(f"{path} is not valid JSON: {exc}") from exc
