"""Content hashes: what makes a post or a media file "the same" across builds."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pipeline.canonical_json import canonical_json

POST_HASH_FIELDS = ("fileName", "slug", "title", "frontmatter", "originalFilePath", "html", "url")


def post_hash(entry: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the fields that define a post (CONTRACT §3)."""
    return hashlib.sha256(canonical_json({k: entry[k] for k in POST_HASH_FIELDS})).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        # Streamed: videos can be far larger than we want in memory.
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
