"""A post's top-level `date`, which clients sort "recent posts" by, and where it came from.

The first that exists wins: a frontmatter date (`date`, `publishDate`, …), a date the file or its page bundle
is named with (`2020-01-31-title.md`, Jekyll's and Zola's convention), a date a Zola `path` starts with
(`path = "2022/10/28/gats"`), then the commit that added the file (`gitCreated`).
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re

from pipeline.models import JSON

FRONTMATTER_KEYS = ("date", "Date", "publishDate", "created")
_NAMED = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[-_]|$)")
_PATH = re.compile(r"^/?(\d{4})/(\d{2})/(\d{2})(?:/|$)")
_BUNDLE_NAMES = frozenset({"index.md", "_index.md"})


def _day(m: re.Match[str] | None) -> str | None:
    if m is None:
        return None
    try:
        return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat()
    except ValueError:  # 2020-13-45-notes.md is a name, not a date
        return None


def name_date(rel: str) -> str | None:
    """The date a post's file name (or, for `index.md`, its folder's) starts with."""
    name = posixpath.basename(rel)
    if name.lower() in _BUNDLE_NAMES:
        name = posixpath.basename(posixpath.dirname(rel))
    return _day(_NAMED.match(name))


def post_date(frontmatter: JSON, rel: str, git_created: str | None) -> tuple[str, str] | None:
    """(date, source) with source one of frontmatter, fileName, path, git; None when nothing dates the post."""
    for key in FRONTMATTER_KEYS:
        value = frontmatter.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip(), "frontmatter"
    named = name_date(rel)
    if named is not None:
        return named, "fileName"
    path = frontmatter.get("path")
    from_path = _day(_PATH.match(path.strip())) if isinstance(path, str) else None
    if from_path is not None:
        return from_path, "path"
    if git_created:
        return git_created, "git"
    return None
