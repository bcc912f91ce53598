"""Paths on this machine that a request names: taken only under the folders the operator lists.

A caller of a shared service must not have the server's own disk read, published or pushed to a remote of
theirs. So a path a request names — a local `source`, a `file://` URL, `repoInfo.path`, `xmlFilePath`, a dist
folder — is accepted only when it resolves, symlinks included, under one of REPOBUILD_LOCAL_SOURCE_ROOTS
(none by default). The API checks at enqueue, and every stage checks again right before it reads or writes,
with the settings it runs with: the disk or the roots may have changed since.

A refusal says the same thing whether the path is missing, not a folder, unreadable or elsewhere: anything
finer would tell a caller which files the server has. Only inside the roots may a message say more.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline.errors import PermanentError

NOT_ALLOWED = "not under an allowed local source root"
NONE_ALLOWED = "is a path on the server, and this server takes none (REPOBUILD_LOCAL_SOURCE_ROOTS is empty)"
# Where a job's options (the original's `data`) name a path on this machine, by the original's spellings:
# always a path; a source, which may be a path or a URL (source_path_of); a git remote to push to (local_path_of).
PATH_OPTIONS = (("xmlFilePath",), ("distFolder",), ("assets", "distFolder"), ("repoInfo", "distPath"))
SOURCE_OPTIONS = (("repoUrl",), ("repoInfo", "path"))
PUSH_OPTIONS = (("remoteUrl",),)
# dulwich's remote transports; any other `scheme:` is ssh to a host by its rsync-style reading.
_REMOTE_SCHEMES = frozenset({"git", "ssh", "git+ssh", "http", "https"})


class LocalPathRefused(PermanentError):
    """A path a request names is not one this server takes; `field` names it, `problem` says why."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def local_path_of(location: str) -> str | None:
    """The path on this machine that a git location names, read as dulwich reads it; None for a remote.

    dulwich clones `file://` URLs and anything without a colon (a path, even `git@x`) from the local disk.
    """
    try:
        parsed = urlparse(location)
    except ValueError:  # a malformed netloc: dulwich falls back to its rsync-style reading, as below
        return None if ":" in location else location
    if parsed.scheme == "file":
        return parsed.path
    if parsed.scheme in _REMOTE_SCHEMES or ":" in location:
        return None
    return location


def source_path_of(location: str) -> str | None:
    """The path on this machine a job's source names (`source`, `repoUrl`, `repoInfo.path`), or None.

    A source is a path when it is no URL (no `://`) and no `git@host:repo` (api's source_spec reads it so); a URL
    may still be a local one (`local_path_of`).
    """
    if "://" not in location and not location.startswith("git@"):
        return location
    return local_path_of(location)


def resolve_local(path: str, roots: Sequence[str], field: str) -> Path:
    """The real path `path` names, when it lies under one of `roots`; else LocalPathRefused naming `field`.

    Every symlink that exists on the way is resolved, so a link under a root cannot lead out of it; a missing
    tail is left as written (it is no link), so a folder under a root that does not exist yet is still accepted:
    the stage that reads it says it is missing, which tells nothing about the disk outside the roots.
    """
    if not roots:
        raise LocalPathRefused(field, NONE_ALLOWED)
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):  # a NUL byte, a path too long for the system
        raise LocalPathRefused(field, NOT_ALLOWED) from None
    if not any(_within(real, os.path.realpath(root)) for root in roots):
        raise LocalPathRefused(field, NOT_ALLOWED)
    return Path(real)


def _within(real: str, root: str) -> bool:
    # commonpath compares whole components: /srv/ab is not under /srv/a
    return os.path.commonpath([root, real]) == root


def existing_local(path: str, roots: Sequence[str], field: str, *, folder: bool) -> Path:
    """`resolve_local`, then the folder (or file) must be there: what a stage calls right before it reads."""
    real = resolve_local(path, roots, field)
    # What is left unresolved is a missing tail or a loop: neither leads anywhere.
    if not real.exists():
        raise LocalPathRefused(field, "does not exist")
    if folder and not real.is_dir():
        raise LocalPathRefused(field, "is not a folder")
    if not folder and not real.is_file():
        raise LocalPathRefused(field, "is not a file")
    return real


def without_paths(text: str, names: Mapping[str, str]) -> str:
    """`text` with each path of this machine in `names` (and its real path) replaced by the words for it.

    For error messages: a caller learns what went wrong, not where the worker keeps its files."""
    spelled = {spelling: words for path, words in names.items() if path
               for spelling in (path, os.path.realpath(path))}
    for path in sorted(spelled, key=len, reverse=True):  # a folder inside another is replaced as itself
        text = text.replace(path, spelled[path])
    return text


def option_paths(options: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], str]]:
    """(where, path) of each path on this machine that a job's options name."""
    for where in PATH_OPTIONS:
        value = _at(options, where)
        if isinstance(value, str) and value:
            yield where, value
    for where in SOURCE_OPTIONS + PUSH_OPTIONS:
        value = _at(options, where)
        if not isinstance(value, str) or not value.strip():
            continue
        path = source_path_of(value) if where in SOURCE_OPTIONS else local_path_of(value)
        if path is not None:
            yield where, path


def _at(options: Mapping[str, Any], where: tuple[str, ...]) -> Any:
    value: Any = options
    for name in where:
        if not isinstance(value, Mapping):
            return None
        value = value.get(name)
    return value
