"""Links between posts in a site generator's own syntax, and links to another post's URL.

Hugo `[x]({{< ref "foo.md" >}})` and Jekyll `[x]({% post_url 2010-07-21-name %})` are not links to markdown:
their spaces end a link destination. `mark_generator_links` rewrites each such destination (and reference
definition) to a `x-repobuild-ref:` URL before parsing, outside code, so mistune makes it a link and the
resolver then treats it like a link to a `.md` file. Zola's `@/section/foo.md` is a valid destination as is.

`PermalinkIndex` finds the post a "pretty" link names (`../code-of-conduct/#x`, `/blog/2022/10/28/gats/`): by
the URLs each post is served at (site_conventions.site_urls), the longest match of the link's last segments
first, since a site may be served under a prefix (`/blog/`) that is not in the repository.
"""

from __future__ import annotations

import posixpath
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from urllib.parse import quote, unquote

from pipeline.markdown.site_conventions import url_segments

MARKER = "x-repobuild-ref:"
HUGO, JEKYLL_POST, JEKYLL_LINK = "hugo", "jekyll-post", "jekyll-link"
_SITE_VARS = r"(?:\{\{-?\s*site\.\w+\s*-?\}\}\s*)*"
_SHORTCODE = (r"\{\{[<%]-?\s*(?P<ref>rel)?ref\s+(?:path=)?(?P<q>[\"'])(?P<hugo>[^\"'\n]+)(?P=q)[^}\n]*?[>%]\}\}"
              r"|\{%-?\s*(?P<tag>post_url|link)\s+(?P<jekyll>[^\s%]+)\s*-?%\}")
_DESTINATION = re.compile(
    r"(?P<code>`+[^`\n]*`+)"
    rf"|(?P<lead>\]\(\s*|^[ ]{{0,3}}\[[^\]\n]+\]:[ \t]*){_SITE_VARS}(?:{_SHORTCODE})(?P<rest>[^\s)]*)",
    re.MULTILINE)
_FENCE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})")


def _marker(m: re.Match[str]) -> str:
    if m.group("code"):
        return m.group(0)
    if m.group("hugo"):
        kind, target = HUGO, m.group("hugo").strip()
    else:
        kind, target = (JEKYLL_POST if m.group("tag") == "post_url" else JEKYLL_LINK), m.group("jekyll")
    return f"{m.group('lead')}{MARKER}{kind}:{quote(target, safe='/#.-_~@')}{m.group('rest')}"


def mark_generator_links(body: str) -> str:
    """`body` with generator link syntax in link destinations made `x-repobuild-ref:` URLs; fenced code is left."""
    if "{{" not in body and "{%" not in body:
        return body
    out: list[str] = []
    prose: list[str] = []
    fence: str | None = None
    for line in body.splitlines(keepends=True):
        m = _FENCE.match(line)
        if fence is None and m:
            out.append(_DESTINATION.sub(_marker, "".join(prose)))
            prose, fence = [], m.group(1)
            out.append(line)
        elif fence is not None:
            out.append(line)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
        else:
            prose.append(line)
    out.append(_DESTINATION.sub(_marker, "".join(prose)))
    return "".join(out)


def split_marker(href: str) -> tuple[str, str, str] | None:
    """(kind, target path, "#fragment" or "") of an `x-repobuild-ref:` URL, else None."""
    if not href.startswith(MARKER):
        return None
    kind, _, rest = href[len(MARKER):].partition(":")
    target, _, fragment = unquote(rest).partition("#")
    return kind, target, f"#{fragment}" if fragment else ""


def is_page_link(path: str) -> bool:
    """A link path that may be a page's URL: no extension, or `.html` (a link to `x.pdf` is to a file). The site's
    home (`/`) and `..` name no page of their own."""
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return bool(last) and not path.startswith(("{", "@")) and ("." not in last or last.endswith((".html", ".htm")))


class PermalinkIndex:
    """Posts by the URLs they are served at."""

    def __init__(self, urls_of: Iterable[tuple[str, list[str]]], closest: Callable[[list[str], str], str]) -> None:
        self._closest = closest
        self._exact: dict[tuple[str, ...], list[str]] = defaultdict(list)
        self._last: dict[str, list[str]] = defaultdict(list)
        self._home: dict[str, tuple[str, ...]] = {}
        for path, urls in urls_of:
            for url in urls:
                segments = url_segments(url)
                if not segments:
                    continue
                self._home.setdefault(path, segments)
                if path not in self._exact[segments]:
                    self._exact[segments].append(path)
                if path not in self._last[segments[-1]]:
                    self._last[segments[-1]].append(path)

    def find(self, link_path: str, from_path: str) -> str | None:
        """The post `link_path` (a link's path, no fragment) names, written in the post at `from_path`."""
        if link_path.startswith("/"):
            absolute = link_path
        else:
            base = "/" + "/".join(self._home.get(from_path, ())) + "/"
            absolute = posixpath.normpath(posixpath.join(base, link_path))
        segments = tuple(s for s in url_segments(absolute) if s != "..")
        if not segments:
            return None
        for start in range(len(segments)):
            found = self._exact.get(segments[start:])
            if found:
                return self._closest(found, from_path)
        last = self._last.get(segments[-1])
        return self._closest(last, from_path) if last else None
