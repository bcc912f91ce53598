"""What Zola, Hugo and Jekyll sites mean by their file layout and frontmatter: drafts, section pages,
the content folder, and the URLs a post is served at (which other posts link to instead of its file).
"""

from __future__ import annotations

import posixpath
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from pipeline.markdown.slugs import explicit_slug
from pipeline.models import JSON

CONTENT_FOLDER = "content"  # Zola's and Hugo's; `@/x.md` and `ref "/x.md"` start there
SECTION_NAME = "_index.md"
DRAFTS_FOLDER = "_drafts"  # Jekyll's
# Frontmatter keys that name a URL the post is (also) served at: Jekyll `permalink`, Zola `path`, Hugo `url`,
# and the old URLs Zola and Hugo redirect from.
URL_KEYS = ("permalink", "path", "url")
ALIAS_KEYS = ("aliases", "redirect_from")
# Where each generator names the site's own address: Zola `base_url`, Hugo `baseURL`, Jekyll `url`.
CONFIG_FILES = ("config.toml", "zola.toml", "hugo.toml", "hugo.yaml", "hugo.yml", "config.yaml", "config.yml",
                "_config.yml", "_config.yaml")
BASE_URL_KEYS = ("base_url", "baseURL", "baseurl", "url")
CONFIG_MAX_BYTES = 1 << 20
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return None


def is_draft(frontmatter: JSON, rel: str) -> bool:
    """Zola `draft = true`, Hugo `draft: true`, Jekyll `published: false` or a file under `_drafts/`."""
    if _flag(frontmatter.get("draft")) is True or _flag(frontmatter.get("published")) is False:
        return True
    return DRAFTS_FOLDER in rel.split("/")[:-1]


def is_section(rel: str) -> bool:
    """Zola's and Hugo's section page of a folder (Hugo's branch bundle)."""
    return posixpath.basename(rel) == SECTION_NAME


def content_root(posts: Iterable[str]) -> str:
    """`content` when posts live in a Zola or Hugo content folder, else the repository root ("")."""
    return CONTENT_FOLDER if any(p.startswith(CONTENT_FOLDER + "/") for p in posts) else ""


def url_segments(url: str) -> tuple[str, ...]:
    """A URL path as lower-case segments, without a trailing `index.html` or `.html`: `/Blog/x.html` → (blog, x)."""
    segments = [s for s in url.split("?")[0].split("#")[0].lower().split("/") if s and s != "."]
    if segments and segments[-1] in ("index.html", "index.htm"):
        segments.pop()
    if segments and segments[-1].endswith((".html", ".htm")):
        segments[-1] = segments[-1].rsplit(".", 1)[0]
    return tuple(segments)


def _explicit_urls(frontmatter: JSON) -> list[str]:
    found: list[str] = []
    for key in URL_KEYS + ALIAS_KEYS:
        value = frontmatter.get(key)
        for item in value if isinstance(value, list) else [value]:
            # `/:year/:title/` is a Jekyll pattern, not a URL: the derived URLs below stand for it.
            if isinstance(item, str) and item.strip() and ":" not in item and not item.startswith("{"):
                found.append(item.strip())
    return found


def site_urls(rel: str, frontmatter: JSON, root: str) -> list[str]:
    """The URL paths a post is served at, the one other links are relative to first.

    Explicit ones from the frontmatter, then the one its place implies: the path inside the content folder,
    without Jekyll's `_posts`-style collection folders, `index`/`_index` standing for their folder, the
    frontmatter `slug` for the file name, and a dated name (`2020-01-31-x`) both as `2020/01/31/x` and `x`.
    """
    urls = _explicit_urls(frontmatter)
    inside = rel[len(root) + 1:] if root and rel.startswith(root + "/") else rel
    *folders, name = inside.split("/")
    folders = [f for f in folders if not f.startswith("_")]
    stem = name[:-3] if name.lower().endswith(".md") else name
    slug = explicit_slug(frontmatter.get("slug"))
    if stem.lower() in ("index", "_index"):
        urls.append("/" + "/".join(folders) + "/")
        return urls
    stem = slug or stem
    dated = stem[:10]
    if len(stem) > 11 and stem[10] == "-" and dated.replace("-", "").isdigit() and dated.count("-") == 2:
        urls.append("/" + "/".join([*folders, *dated.split("-"), stem[11:]]) + "/")
        stem = stem[11:]
    urls.append("/" + "/".join([*folders, stem]) + "/")
    return urls


def host_of(url: str) -> str | None:
    """The host of an http(s) URL or of a bare domain (`example.org`), lower-case; None for anything else."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return parts.hostname.lower() if parts.scheme in ("http", "https") and parts.hostname else None


def config_hosts(root: Path) -> tuple[list[str], list[str]]:
    """(hosts the site's config names as its own address, problems reading a config file).

    A link to one of these hosts is a link inside the site, as if it were written from its root."""
    hosts: list[str] = []
    problems: list[str] = []
    for name in CONFIG_FILES:
        path = root / name
        if not path.is_file() or path.is_symlink() or path.stat().st_size > CONFIG_MAX_BYTES:
            continue
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text) if name.endswith(".toml") else yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, yaml.YAMLError, RecursionError) as exc:
            problems.append(f"{name}: not read for the site's address ({type(exc).__name__})")
            continue
        if not isinstance(data, dict):
            continue
        for key in BASE_URL_KEYS:
            value = data.get(key)
            host = host_of(value) if isinstance(value, str) and value.strip() else None
            if host and host not in hosts:
                hosts.append(host)
    return hosts, problems
