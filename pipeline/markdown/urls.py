"""Public URLs of posts and media. Every URL the parse stage writes is made here."""

from __future__ import annotations

from dataclasses import dataclass


def _base(domain: str | None) -> str:
    if not domain:
        return ""
    domain = domain.strip().rstrip("/")
    return domain if "://" in domain else f"https://{domain}"


# The variant posts link to: wide enough for a page, small enough to load fast (CONTRACT §3).
LINKED_SIZE = "lg"


def media_filename(hash: str, ext: str, resized: bool) -> str:
    """The published name of a media file: its `lg` webp variant when resized, else the file as is."""
    return f"{hash}-{LINKED_SIZE}.webp" if resized else f"{hash}.{ext.lower()}"


def media_url(hash: str, ext: str, media_prefix: str, domain: str | None, resized: bool = False) -> str:
    """The one place that knows the public URL of a published media file."""
    return f"{_base(domain)}{media_prefix.rstrip('/')}/{media_filename(hash, ext, resized)}"


def note_url(slug: str, note_prefix: str, domain: str | None) -> str:
    return f"{_base(domain)}{note_prefix.rstrip('/')}/{slug}"


@dataclass(frozen=True)
class UrlScheme:
    note_prefix: str
    media_prefix: str
    domain: str | None = None

    def note(self, slug: str) -> str:
        return note_url(slug, self.note_prefix, self.domain)

    def media(self, hash: str, ext: str, resized: bool = False) -> str:
        return media_url(hash, ext, self.media_prefix, self.domain, resized)
