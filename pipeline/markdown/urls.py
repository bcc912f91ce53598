"""Public URLs of posts and media. Every URL the parse stage writes is made here."""

from __future__ import annotations

from dataclasses import dataclass


def _base(domain: str | None) -> str:
    if not domain:
        return ""
    domain = domain.strip().rstrip("/")
    return domain if "://" in domain else f"https://{domain}"


def media_url(hash: str, ext: str, media_prefix: str, domain: str | None) -> str:
    """The one place that knows the name of a published media file (resized variants will change it)."""
    return f"{_base(domain)}{media_prefix.rstrip('/')}/{hash}.{ext.lower()}"


def note_url(slug: str, note_prefix: str, domain: str | None) -> str:
    return f"{_base(domain)}{note_prefix.rstrip('/')}/{slug}"


@dataclass(frozen=True)
class UrlScheme:
    note_prefix: str
    media_prefix: str
    domain: str | None = None

    def note(self, slug: str) -> str:
        return note_url(slug, self.note_prefix, self.domain)

    def media(self, hash: str, ext: str) -> str:
        return media_url(hash, ext, self.media_prefix, self.domain)
