"""Slugs for posts (unique across the repository) and ids for headings (unique within a post)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from posixpath import basename, dirname

from pipeline.models import JSON

_DROP = re.compile(r"['’`\"]")
_SEPARATORS = re.compile(r"[^\w]+|_+")
_DASHES = re.compile(r"-{2,}")

# A slug is a file name in the bundle (`_posts/slug/<slug>.json`, a `/` in it a folder) and part of a URL. Each
# segment stays well under the 255 bytes a name may have on common file systems, leaving room for a `-N` of
# disambiguation and `.json`; the whole slug well under the 4096 bytes of a path. A longer slug is cut at a
# character boundary and ends with 8 hex digits of the SHA-256 of the slug asked for: the same slug always
# gives the same result, and two long slugs that only differ after the cut stay apart.
SEGMENT_MAX_BYTES = 200
SLUG_MAX_BYTES = 1000
_DIGEST_CHARS = 8


def slugify(text: str) -> str:
    """Lower-case words joined by `-`. Accented Latin letters lose their accent (é → e); other scripts are kept
    as they are, so an Arabic or Chinese title still gives a readable slug rather than an empty one."""
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(_ascii_base(ch) for ch in _DROP.sub("", text))
    text = _SEPARATORS.sub("-", text)
    return _DASHES.sub("-", text).strip("-")


def _ascii_base(ch: str) -> str:
    if ch.isascii():
        return ch
    base = unicodedata.normalize("NFKD", ch)[0]
    # Only drop the mark when what remains is a plain letter: in Devanagari and others the marks are vowels.
    return base if base.isascii() and base.isalnum() else ch


def bounded_slug(slug: str) -> str:
    """`slug` itself when it fits the limits above, else its cut form ending in `-<digest>`."""
    segments = slug.split("/")
    if len(slug.encode()) <= SLUG_MAX_BYTES and all(len(s.encode()) <= SEGMENT_MAX_BYTES for s in segments):
        return slug
    room = _DIGEST_CHARS + 1
    cut = "/".join(_cut_utf8(s, SEGMENT_MAX_BYTES - room) for s in segments)
    cut = _cut_utf8(cut, SLUG_MAX_BYTES - room).rstrip("/-")
    digest = hashlib.sha256(slug.encode()).hexdigest()[:_DIGEST_CHARS]
    return f"{cut}-{digest}" if cut else digest


def _cut_utf8(text: str, max_bytes: int) -> str:
    return text.encode()[:max_bytes].decode("utf-8", errors="ignore")


@dataclass(frozen=True)
class SlugInfo:
    desired: str
    final: str
    asked_bytes: int | None = None  # the length of the slug asked for, when it was cut to `desired`

    def to_json(self) -> JSON:
        return {
            "desiredSlug": self.desired,
            "disambiguatedSlug": self.final,
            "finalSlug": self.final,
            "isDisambiguated": self.final != self.desired,
        }


def explicit_slug(frontmatter_slug: object) -> str | None:
    if isinstance(frontmatter_slug, str | int | float) and not isinstance(frontmatter_slug, bool):
        return str(frontmatter_slug).strip() or None
    return None


def desired_slug(path: str, frontmatter_slug: object) -> str:
    """Frontmatter `slug` verbatim; else the file name slugified; `index.md` (a page bundle) and `_index.md`
    (a Zola or Hugo section page) are named after their folder."""
    explicit = explicit_slug(frontmatter_slug)
    if explicit is not None:
        return explicit
    stem = basename(path)[: -len(".md")] if path.lower().endswith(".md") else basename(path)
    if stem.lower() in ("index", "_index"):
        folder = basename(dirname(path))
        return (slugify(folder) or "index") if folder else "index"
    return slugify(stem) or "post"


def assign_slugs(posts: Iterable[tuple[str, object]]) -> dict[str, SlugInfo]:
    """Unique slugs for `(path, frontmatter slug)` pairs.

    Posts with an explicit frontmatter slug are served first (the author asked for that URL), then the others;
    within each group shallower paths first, then in path order: `guide.md` keeps `guide` and its
    translation `fr/guide.md` becomes `guide-2`, whatever the folder names sort like. A taken slug gets
    `-2`, `-3`, … (the first free one); a slug too long for a file name is cut first (`bounded_slug`).
    The same repository always gives the same slugs.
    """
    items = sorted(posts, key=lambda p: (p[0].count("/"), p[0]))
    explicit = [p for p in items if explicit_slug(p[1]) is not None]
    implicit = [p for p in items if explicit_slug(p[1]) is None]
    ids = UniqueIds()
    out: dict[str, SlugInfo] = {}
    for path, fm_slug in explicit + implicit:
        asked = desired_slug(path, fm_slug)
        desired = bounded_slug(asked)
        out[path] = SlugInfo(desired, ids.claim(desired), None if desired == asked else len(asked.encode()))
    return out


class UniqueIds:
    """Unique names: heading ids within one post (the slug of the text, `-2`, `-3`, … on repeats), and post
    slugs within a repository."""

    def __init__(self) -> None:
        self._used: set[str] = set()
        # Where the search for a free suffix resumes, so a thousand `index` pages cost linear time.
        self._next: dict[str, int] = {}

    def make(self, text: str) -> str:
        return self.claim(slugify(text) or "section")

    def claim(self, base: str) -> str:
        """`base` if free, else the first free `base-N` (N ≥ 2); taken from then on."""
        final, n = base, self._next.get(base, 2)
        while final in self._used:
            final, n = f"{base}-{n}", n + 1
        self._used.add(final)
        self._next[base] = n
        return final
