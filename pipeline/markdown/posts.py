"""One markdown file to one post entry (CONTRACT §3), everything but the `links` known only after all posts."""

from __future__ import annotations

import datetime as dt
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ItemError
from pipeline.markdown.frontmatter import split_frontmatter
from pipeline.markdown.hashing import post_hash
from pipeline.markdown.links import Resolver
from pipeline.markdown.plain import plain_text
from pipeline.markdown.render import Problem, render_post
from pipeline.markdown.site_conventions import is_section
from pipeline.markdown.site_dates import post_date
from pipeline.models import JSON


def read_post(root: Path, rel: str) -> tuple[JSON, str]:
    """(frontmatter, body) of a post file; ItemError when it is unreadable, not UTF-8, or its frontmatter bad."""
    try:
        raw = (root / rel).read_bytes()
    except OSError as exc:
        raise ItemError(rel, f"cannot read file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ItemError(rel, f"not valid UTF-8 (byte {exc.start})") from exc
    return split_frontmatter(text, rel)


def file_name(rel: str) -> str:
    name = posixpath.basename(rel)
    return name[:-3] if name.lower().endswith(".md") else name


def post_title(frontmatter: JSON, rel: str) -> str:
    title = frontmatter.get("title")
    if isinstance(title, str | int | float) and not isinstance(title, bool) and str(title).strip():
        return str(title).strip()
    return file_name(rel)


@dataclass
class PostOutput:
    entry: JSON
    link_paths: list[str] = field(default_factory=list)
    media_paths: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def build_post(root: Path, rel: str, slug_info: JSON, resolver: Resolver, git: list[str] | None = None) -> PostOutput:
    """The post at `rel`; `git` is [gitCreated, gitModified] of its file when the history gave them."""
    frontmatter, body = read_post(root, rel)
    rendered = render_post(body, rel, resolver)
    out = PostOutput(entry={}, link_paths=[p for p in rendered.post_links if p != rel],
                     media_paths=list(rendered.media_used), problems=list(rendered.problems))
    frontmatter = _resolve_frontmatter(frontmatter, rel, resolver, out)
    plain = plain_text(rendered.tokens)
    stat = (root / rel).stat()
    slug = str(slug_info["finalSlug"])
    entry: JSON = {
        "fileName": file_name(rel),
        "slug": slug,
        "title": post_title(frontmatter, rel),
        "frontmatter": frontmatter,
        "firstParagraphText": plain.first_paragraph,
        "plain": plain.text,
        "wordCount": plain.word_count,
        "html": rendered.html,
        "toc": rendered.toc,
        "originalFilePath": rel,
        "folder": posixpath.dirname(rel),
        "url": resolver.urls.note(slug),
    }
    entry["hash"] = post_hash(entry)
    entry["links"] = []
    if rendered.first_image is not None:
        entry["firstImage"] = rendered.first_image
    # Linux has no birth time in os.stat; the modification time is the honest fallback.
    entry["fsCreated"] = _iso(getattr(stat, "st_birthtime", stat.st_mtime))
    entry["fsModified"] = _iso(stat.st_mtime)
    if git:
        entry["gitCreated"], entry["gitModified"] = git
    entry["_slugInfo"] = dict(slug_info)
    dated = post_date(frontmatter, rel, git[0] if git else None)
    if dated is not None:
        entry["date"], entry["dateSource"] = dated
    if is_section(rel):
        entry["isSection"] = True
    entry["tags"] = post_tags(frontmatter)
    out.entry = entry
    return out


def post_tags(frontmatter: JSON) -> list[str]:
    tags = frontmatter.get("tags")
    if isinstance(tags, str):
        items: list[Any] = tags.split(",")
    elif isinstance(tags, list):
        items = tags
    else:
        return []
    return [str(t).strip() for t in items if t is not None and not isinstance(t, dict | list) and str(t).strip()]


def _resolve_frontmatter(value: Any, rel: str, resolver: Resolver, out: PostOutput) -> Any:
    """Image paths anywhere in the frontmatter become media URLs; ones that lead nowhere stay and are reported."""
    if isinstance(value, dict):
        return {k: _resolve_frontmatter(v, rel, resolver, out) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_frontmatter(v, rel, resolver, out) for v in value]
    if not isinstance(value, str):
        return value
    resolved = resolver.frontmatter_value(value, rel)
    if resolved is None:
        return value
    if resolved.broken is not None:
        out.problems.append(Problem(f"frontmatter image not found: {resolved.broken}"))
        return value
    if resolved.media is not None and resolved.media not in out.media_paths:
        out.media_paths.append(resolved.media)
    return resolved.url


def _iso(timestamp: float) -> str:
    # The same form as JavaScript's Date.toISOString(), which the original's clients parse.
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
