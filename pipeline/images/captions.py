"""Caption text for images, the input of their vectors when no CLIP model is configured.

The text model cannot see pixels, so an image is described by what the repository says about it:
the alt and title text of every `<img>` that shows it, the paragraph around it, the title of the post
it appears in, and its file name. Image search then works in the same space as post search.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from html.parser import HTMLParser
from posixpath import basename, splitext

from pipeline.models import JSON

_HASH = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")
_BLOCKS = frozenset({"p", "li", "figure", "figcaption", "blockquote", "td", "th", "dd", "dt",
                     "h1", "h2", "h3", "h4", "h5", "h6"})
_SPACES = re.compile(r"\s+")
MAX_CONTEXT_CHARS = 400
MAX_CAPTION_CHARS = 1500


class _ImageContext(HTMLParser):
    """Collects, per image hash, its alt/title attributes and the text of the block it sits in."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.block: list[str] = []
        self.block_images: list[str] = []
        self.found: dict[str, list[str]] = defaultdict(list)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            if self.depth == 0:
                self.block, self.block_images = [], []
            self.depth += 1
        if tag != "img":
            return
        a = dict(attrs)
        m = _HASH.search(a.get("src") or "")
        if m is None:
            return
        h = m.group(1)
        self.found[h].extend(t for t in (a.get("alt"), a.get("title")) if t)
        if self.depth:
            self.block_images.append(h)

    def handle_endtag(self, tag: str) -> None:
        if tag not in _BLOCKS or self.depth == 0:
            return
        self.depth -= 1
        if self.depth == 0:
            text = _SPACES.sub(" ", "".join(self.block)).strip()[:MAX_CONTEXT_CHARS]
            for h in self.block_images:
                if text:
                    self.found[h].append(text)

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.block.append(data)


def _file_words(path: str) -> str:
    """`img/team-photo_2024.jpg` → `team photo 2024`."""
    return _SPACES.sub(" ", re.sub(r"[-_.]+", " ", splitext(basename(path))[0])).strip()


def image_captions(posts: Iterable[JSON], medias: list[JSON]) -> dict[str, str]:
    """{media hash: caption} for every media entry, deterministic for the same posts and media.

    `posts` is read once, a post at a time: of each only the images it shows and their context are kept."""
    shown: list[tuple[str, dict[str, list[str]], str]] = []
    for post in posts:
        parser = _ImageContext()
        parser.feed(str(post.get("html") or ""))
        parser.close()
        if parser.found:
            shown.append((str(post.get("hash")), parser.found, str(post.get("title") or "")))
    parts: dict[str, list[str]] = defaultdict(list)
    for _post, found, title in sorted(shown, key=lambda s: s[0]):
        for h, texts in found.items():
            parts[h].extend([*texts, title] if title else texts)
    names: dict[str, list[str]] = defaultdict(list)
    for media in sorted(medias, key=lambda m: str(m.get("originalPath"))):
        names[str(media.get("hash") or "")].append(_file_words(str(media.get("originalPath") or "")))
    captions: dict[str, str] = {}
    for h, files in names.items():  # the same bytes at two paths are one image with both names
        seen: list[str] = []
        for text in [*parts.get(h, []), *files]:
            text = text.strip()
            if text and text not in seen:
                seen.append(text)
        captions[h] = ". ".join(seen)[:MAX_CAPTION_CHARS]
    return captions
