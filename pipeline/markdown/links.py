"""Resolving what a post points at — other posts, media files — to public URLs."""

from __future__ import annotations

import posixpath
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from pipeline.markdown.discovery import media_ext
from pipeline.markdown.site_conventions import site_urls
from pipeline.markdown.site_links import HUGO, JEKYLL_LINK, JEKYLL_POST, PermalinkIndex, is_page_link, split_marker
from pipeline.markdown.slugs import slugify
from pipeline.markdown.urls import UrlScheme

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_WIKI_EMBED = re.compile(r"^!\[\[([^\]\n]+)\]\]$")
BROKEN_PREFIX = "#broken-link:"


@dataclass(frozen=True)
class Resolved:
    url: str
    post: str | None = None
    media: str | None = None
    broken: str | None = None
    unresolved: str | None = None  # a link that may name a page of the site but names no post: kept as written


def is_external(ref: str) -> bool:
    return bool(_SCHEME.match(ref)) or ref.startswith("//")


def broken(name: str) -> Resolved:
    return Resolved(BROKEN_PREFIX + name, broken=name)


def _split(ref: str) -> tuple[str, str]:
    """(unquoted path, "#fragment" or "") of a link target."""
    path, _, fragment = ref.partition("#")
    path = path.partition("?")[0]
    return unquote(path), f"#{fragment}" if fragment else ""


def _join(from_path: str, ref: str) -> str | None:
    """Repository path of `ref` as written in the post at `from_path`; None when it leaves the repository."""
    if ref.startswith("/"):
        joined = ref.lstrip("/")
    else:
        joined = posixpath.join(posixpath.dirname(from_path), ref)
    norm = posixpath.normpath(joined) if joined else ""
    if norm in ("", ".") or norm == ".." or norm.startswith("../"):
        return None
    return norm


def _closest(candidates: list[str], from_path: str) -> str:
    """Among files of the same name, the one a reader means: same folder first, then the shallowest."""
    here = posixpath.dirname(from_path)
    return min(candidates, key=lambda p: (posixpath.dirname(p) != here, p.count("/"), p))


class Resolver:
    """Lookups over the posts and media found at discovery, shared by every batch."""

    def __init__(self, posts: Iterable[dict[str, Any]], medias: dict[str, dict[str, Any]], urls: UrlScheme,
                 content_root: str = "", site_hosts: Iterable[str] = ()) -> None:
        self.urls = urls
        self.content_root = content_root
        self.site_hosts = frozenset(h.lower() for h in site_hosts)
        posts = list(posts)
        self.medias = medias
        self.slugs: dict[str, str] = {}
        self._post_lower: dict[str, str] = {}
        self._by_name: dict[str, list[str]] = defaultdict(list)
        self._by_slug: dict[str, str] = {}
        self._by_title: dict[str, list[str]] = defaultdict(list)
        for p in posts:
            path = str(p["path"])
            self.slugs[path] = str(p["slug"])
            self._post_lower.setdefault(path.lower(), path)
            self._by_name[str(p["fileName"]).lower()].append(path)
            self._by_slug.setdefault(str(p["slug"]).lower(), path)
            self._by_title[str(p["title"]).strip().lower()].append(path)
        self.permalinks = PermalinkIndex(
            ((str(p["path"]), p.get("siteUrls") or site_urls(str(p["path"]), {}, content_root)) for p in posts),
            _closest)
        self._media_lower: dict[str, str] = {}
        self._media_by_name: dict[str, list[str]] = defaultdict(list)
        for path in sorted(medias):
            self._media_lower.setdefault(path.lower(), path)
            self._media_by_name[posixpath.basename(path).lower()].append(path)

    def _post(self, path: str | None) -> str | None:
        if path is None:
            return None
        return path if path in self.slugs else self._post_lower.get(path.lower())

    def media_path(self, path: str | None) -> str | None:
        if path is None:
            return None
        return path if path in self.medias else self._media_lower.get(path.lower())

    def _post_resolved(self, path: str, fragment: str) -> Resolved:
        return Resolved(self.urls.note(self.slugs[path]) + fragment, post=path)

    def _media_resolved(self, path: str) -> Resolved:
        info = self.medias[path]
        return Resolved(self.urls.media(str(info["hash"]), str(info["ext"]), bool(info.get("resized"))), media=path)

    def link(self, href: str, from_path: str) -> Resolved | None:
        """A markdown link: `.md` targets (also Zola's `@/x.md` and the generators' link tags) become note URLs,
        media files media URLs, a page URL of another post that post's note URL; None leaves it as written."""
        marked = split_marker(href)
        if marked is not None:
            return self._generator_link(*marked, from_path)
        if not href or href.startswith(("#", "?")):
            return None
        if is_external(href):
            return self._own_site_link(href, from_path)
        path, fragment = _split(href)
        if path.startswith("@/"):  # Zola: a path inside the content folder
            post = self._post(_join("", posixpath.join(self.content_root, path[2:])))
            return self._post_resolved(post, fragment) if post else broken(unquote(href))
        target = _join(from_path, path)
        if path.lower().endswith(".md"):
            post = self._post(target)
            return self._post_resolved(post, fragment) if post else broken(unquote(href))
        media = self.media_path(target) if media_ext(path) else None
        if media:
            return self._media_resolved(media)
        if not is_page_link(path):
            return None
        post = self.permalinks.find(path, from_path)
        return self._post_resolved(post, fragment) if post else Resolved(href, unresolved=unquote(href))

    def _own_site_link(self, href: str, from_path: str) -> Resolved | None:
        """`https://<the site's own host>/x/`: the post served at /x/, else reported and kept; other URLs None."""
        if not self.site_hosts:
            return None
        try:
            parts = urlsplit(href)
            host = (parts.hostname or "").lower()
        except ValueError:  # a malformed URL is no address of the site's
            return None
        path = unquote(parts.path)
        if parts.scheme not in ("http", "https") or host not in self.site_hosts or not is_page_link(path):
            return None
        post = self.permalinks.find(path if path.startswith("/") else "/" + path, from_path)
        fragment = f"#{parts.fragment}" if parts.fragment else ""
        return self._post_resolved(post, fragment) if post else Resolved(href, unresolved=href)

    def _generator_link(self, kind: str, target: str, fragment: str, from_path: str) -> Resolved:
        """Hugo `ref`/`relref` (the post's folder, then the content folder, then by file or bundle name),
        Jekyll `post_url` (by file name) and `link` (from the site's root)."""
        post: str | None = None
        if kind == HUGO:
            bases = [self.content_root] if target.startswith("/") else [posixpath.dirname(from_path),
                                                                        self.content_root]
            stem = target.strip("/")
            for base in bases:
                for variant in (stem, stem + ".md", stem + "/index.md", stem + "/_index.md"):
                    post = post or self._post(_join("", posixpath.join(base, variant)))
            if post is None:
                named = self._by_name.get(posixpath.basename(stem).removesuffix(".md").lower())
                post = _closest(named, from_path) if named else self._by_slug.get(slugify(posixpath.basename(stem)))
        elif kind == JEKYLL_POST:
            named = self._by_name.get(posixpath.basename(target).removesuffix(".md").lower())
            post = _closest(named, from_path) if named else None
        elif kind == JEKYLL_LINK:
            post = self._post(_join("", target))
        return self._post_resolved(post, fragment) if post else broken(target + fragment)

    def image(self, src: str, from_path: str) -> Resolved | None:
        """A markdown image; None for external and data URLs, which stay as written."""
        if not src or is_external(src):
            return None
        path, _ = _split(src)
        media = self.media_path(_join(from_path, path))
        return self._media_resolved(media) if media else broken(unquote(src))

    def wiki(self, target: str, from_path: str) -> Resolved:
        """`[[Page]]` / `[[Page#Heading]]`: by path, then file name, slug or title, the closest file winning."""
        page, _, heading = target.partition("#")
        page = page.strip()
        if media_ext(page) is not None:
            return self.wiki_embed(target, from_path)
        fragment = f"#{slugify(heading)}" if heading.strip() else ""
        if not page:
            return Resolved(fragment or "#")
        stem = page[:-3] if page.lower().endswith(".md") else page
        post = self._post(_join(from_path, stem + ".md")) or self._post(_join("", stem + ".md"))
        if post is None:
            named = (self._by_name.get(posixpath.basename(stem).lower())
                     or self._by_title.get(stem.lower()) or [])
            by_slug = self._by_slug.get(stem.lower()) or self._by_slug.get(slugify(stem))
            post = _closest(named, from_path) if named else by_slug
        return self._post_resolved(post, fragment) if post else broken(target)

    def wiki_embed(self, target: str, from_path: str) -> Resolved:
        """`![[x.png]]`: a media file by path or by name; `![[Page]]` (a note embed) links to the note."""
        name = target.partition("#")[0].strip()
        if media_ext(name) is None:
            return self.wiki(target, from_path)
        media = self.media_path(_join(from_path, name)) or self.media_path(_join("", name))
        if media is None:
            candidates = self._media_by_name.get(posixpath.basename(name).lower())
            media = _closest(candidates, from_path) if candidates else None
        return self._media_resolved(media) if media else broken(target)

    def frontmatter_value(self, value: str, from_path: str) -> Resolved | None:
        """A frontmatter string that names an image (`./cover.png`, `/assets/x.png`, `![[x.png]]`), else None."""
        m = _WIKI_EMBED.match(value.strip())
        if m:
            return self.wiki_embed(m.group(1), from_path)
        ref = value.strip()
        if not ref or is_external(ref) or media_ext(_split(ref)[0]) is None:
            return None
        # "see logo.png" is prose, not a path; a path with spaces must be explicit about where it starts.
        if any(ch.isspace() for ch in ref) and not ref.startswith(("./", "../", "/")):
            return None
        return self.image(ref, from_path)
