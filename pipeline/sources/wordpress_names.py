"""Names for files and folders of a WordPress import: safe on any disk and in a markdown link, unique per folder.

Slugs and media file names come from the export, which is untrusted: they may carry `..`, slashes, control
characters, Windows-reserved names or hundreds of bytes.
"""

from __future__ import annotations

import re
import unicodedata

# Names Windows refuses whatever the extension; the repository may be checked out there.
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
SLUG_MAX_BYTES = 100
NAME_MAX_BYTES = 120


def safe_name(raw: str, fallback: str, *, max_bytes: int = NAME_MAX_BYTES, keep_extension: bool = False) -> str:
    """One path component that is safe on disk and in a markdown link, or `fallback` when nothing usable is left.

    Letters, marks and digits of any script are kept (a Chinese slug stays readable); everything else, including
    `/`, `\\`, control characters, spaces and the characters markdown links or URLs give a meaning to (`#`, `%`,
    `(`, `)`), becomes `-`. No leading dot or dash, no `..`, at most `max_bytes` of UTF-8. No leading underscore
    either: static site generators skip `_name` folders, and a published slug must never be our `_drafts`.
    """
    text = unicodedata.normalize("NFC", raw)
    chars = [ch if ch in "._-" or unicodedata.category(ch)[0] in "LMN" else "-" for ch in text]
    # a run of dots and dashes is one dash when it has a dash, one dot otherwise: no `..` survives
    text = re.sub(r"\.{2,}", ".", re.sub(r"[-.]*-[-.]*", "-", "".join(chars)))
    text = text.strip("-._ ")
    stem, ext = _split_ext(text) if keep_extension else (text, "")
    stem = _truncate_utf8(stem, max_bytes - len(ext.encode())).rstrip("-._")
    if not stem:
        return fallback
    if stem.lower() in _WINDOWS_RESERVED:
        stem += "-"
    return stem + ext


def _split_ext(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    if dot and stem and 0 < len(ext) <= 10 and ext.isascii() and ext.isalnum():
        return stem, "." + ext.lower()
    return name, ""


def _truncate_utf8(text: str, max_bytes: int) -> str:
    return text.encode()[: max(max_bytes, 0)].decode("utf-8", errors="ignore")


class UniqueNames:
    """First-come unique names within one folder; compared case-insensitively for macOS and Windows checkouts."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def claim(self, name: str, max_bytes: int = SLUG_MAX_BYTES, *, keep_extension: bool = False) -> str:
        stem, ext = _split_ext(name) if keep_extension else (name, "")
        candidate, n = name, 1
        while candidate.casefold() in self._taken:
            n += 1
            suffix = f"-{n}"
            candidate = _truncate_utf8(stem, max_bytes - len(suffix) - len(ext.encode())) + suffix + ext
        self._taken.add(candidate.casefold())
        return candidate
