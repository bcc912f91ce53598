"""Writes a bundle's files under its staging folder and remembers each one's sha256 and size for the manifest.

The files that grow with the repository (posts.json, the embedding maps, content.sqlite, the similarity pairs) are
written as they are produced — an entry at a time, or copied from the artifact store in chunks — so publishing a
large repository never holds one of them whole. The bytes are those `canonical_json` of the whole value gives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.canonical_json import canonical_json
from pipeline.stores.artifacts import CHUNK, ArtifactStore


class _Hashing:
    """A file being written, hashed on the way."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.digest, self.size = fh, hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        self.fh.write(data)
        self.digest.update(data)
        self.size += len(data)


class BundleWriter:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, tuple[str, int]] = {}
        self._dirs: set[Path] = set()

    def _open_path(self, rel: str) -> Path:
        path = self.root / rel
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        return path

    def write(self, rel: str, data: bytes) -> None:
        self._open_path(rel).write_bytes(data)
        self.files[rel] = (hashlib.sha256(data).hexdigest(), len(data))

    def json(self, rel: str, value: Any) -> None:
        self.write(rel, canonical_json(value))

    @contextmanager
    def stream(self, rel: str) -> Iterator[_Hashing]:
        with self._open_path(rel).open("wb") as fh:
            out = _Hashing(fh)
            yield out
        self.files[rel] = (out.digest.hexdigest(), out.size)

    def json_list(self, rel: str, items: Iterable[Any]) -> Iterator[Any]:
        """Write `items` as the JSON list `json(rel, list(items))` would, yielding each item once it is written."""
        with self.stream(rel) as out:
            out.write(b"[")
            for n, item in enumerate(items):
                out.write(b"," + canonical_json(item) if n else canonical_json(item))
                yield item
            out.write(b"]")

    def json_map(self, rel: str, entries: Iterable[tuple[str, Any]]) -> None:
        """Write `(key, value)` entries, given in sorted key order, as `json(rel, dict(entries))` would."""
        with self.stream(rel) as out:
            out.write(b"{")
            for n, (key, value) in enumerate(entries):
                out.write((b"," if n else b"") + canonical_json(key) + b":" + canonical_json(value))
            out.write(b"}")

    def from_store(self, rel: str, store: ArtifactStore, key: str) -> None:
        """The artifact's bytes as the file `rel`, copied (and then hashed) in chunks."""
        path = self._open_path(rel)
        store.get_file(key, path)
        digest, size = hashlib.sha256(), 0
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        self.files[rel] = (digest.hexdigest(), size)

    def copy(self, rel: str, src: Path) -> str:
        """Copy `src` to `rel`, hashing on the way; returns the sha256 of what was copied."""
        with src.open("rb") as fin, self.stream(rel) as out:
            while chunk := fin.read(CHUNK):
                out.write(chunk)
        return self.files[rel][0]

    def remove(self, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)
        self.files.pop(rel, None)
