"""When each file of a commit was first added and last changed, from one walk over the history.

One walk of the commits reachable from the checked-out commit, each diffed against its parents (a merge counts
only for the paths it changed relative to every parent, as `git log` shows it), gives every path at once: one
walk per file would read the same commits thousands of times on a blog with thousands of posts. Dates are the
author's (what `git log` shows), as ISO strings in UTC like the fs dates of a post. Renames are not followed:
a moved file's history starts at the move, as with `git log` without `--follow`.

A shallow clone's history stops at its cut: every file not touched since would seem added there, so such a
history gives no dates at all and says why (`GitDates.shallow`); so does a history with an object missing
(`GitDates.missing`), which must not fail the fetch of a tree that checked out fine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dulwich.diff_tree import TreeChange
from dulwich.errors import MissingCommitError, NotGitRepository
from dulwich.objects import ObjectID
from dulwich.repo import Repo

from pipeline.models import JSON
from pipeline.timestamps import iso


@dataclass
class GitDates:
    commit: str
    shallow: bool = False
    missing: str | None = None  # the object the walk could not read
    commits: int = 0
    # path in the repository → (author time of the first commit that added it, of the last that changed it)
    files: dict[str, tuple[int, int]] = field(default_factory=dict)

    def to_json(self) -> JSON:
        return {"commit": self.commit, "shallow": self.shallow, "missing": self.missing, "commits": self.commits,
                "files": {p: [iso(c), iso(m)] for p, (c, m) in sorted(self.files.items())}}


def _changed_paths(changes: list[TreeChange] | list[list[TreeChange | None]]) -> list[bytes]:
    """Paths that exist after the commit among its changes (adds and modifications, not deletions)."""
    paths: list[bytes] = []
    for change in changes:
        options = change if isinstance(change, list) else [change]
        for one in options:
            if one is not None and one.new is not None and one.new.path is not None:
                paths.append(one.new.path)
                break
    return paths


def file_dates(repo_path: Path, commit: str, keep: Callable[[str], bool]) -> GitDates:
    """Dates of the paths `keep` accepts, over the history reachable from `commit` of the repository at
    `repo_path`. A folder that is not a git repository has no history: an empty result."""
    try:
        repo = Repo(str(repo_path))
    except NotGitRepository:
        return GitDates(commit)
    with repo:
        if repo.get_shallow():
            return GitDates(commit, shallow=True)
        out = GitDates(commit)
        try:
            _walk(repo, commit, keep, out)
        except (KeyError, MissingCommitError) as exc:  # dulwich's KeyError carries the missing object's id
            missing = exc.args[0] if exc.args else b""
            shown = missing.decode("ascii", "replace") if isinstance(missing, bytes) else str(missing)
            return GitDates(commit, missing=shown or "an object")
        return out


def _walk(repo: Repo, commit: str, keep: Callable[[str], bool], out: GitDates) -> None:
    for entry in repo.get_walker(include=[ObjectID(commit.encode())]):
        out.commits += 1
        when = int(entry.commit.author_time)
        for raw in _changed_paths(entry.changes()):
            path = raw.decode("utf-8", errors="replace")
            if not keep(path):
                continue
            seen = out.files.get(path)
            out.files[path] = (when, when) if seen is None else (min(seen[0], when), max(seen[1], when))
