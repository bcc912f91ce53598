"""A list too large to hold whole, at rest: JSON lines in numbered parts, so a stage writes it a batch at a time and
the next stage reads it an item at a time.

Under `key`: `key/part-00000.jsonl`, `key/part-00001.jsonl`, ... (one JSON value per line, as put_json encodes it)
and the header `key.json` — `{"version", "parts", "items"}` — written last: its presence means the list is complete,
as a matrix's header does (stores/vectors.py). A writer that dies part-way leaves parts without a header, which
readers take for a missing artifact; writing again from the start replaces them (the parts of a deterministic
writer come out the same), and parts past the new count are deleted once the header is in place.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from pipeline.errors import PermanentError
from pipeline.stores.artifacts import ArtifactStore

VERSION = 1


def header_key(key: str) -> str:
    return f"{key}.json"


def part_key(key: str, number: int) -> str:
    return f"{key}/part-{number:05d}.jsonl"


def encode_line(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def has_lines(store: ArtifactStore, key: str) -> bool:
    return store.exists(header_key(key))


class LinesWriter:
    """Writes the parts one by one (`part(items)`), then `close()` writes the header that completes the list."""

    def __init__(self, store: ArtifactStore, key: str) -> None:
        self.store, self.key = store, key
        self.parts = 0
        self.items = 0
        # A list being rewritten is not complete until its new header is written.
        if store.exists(header_key(key)):
            store.delete_prefix(header_key(key))

    def part(self, items: Iterable[Any]) -> None:
        data = bytearray()
        for item in items:
            data += encode_line(item)
            self.items += 1
        self.store.put_bytes(part_key(self.key, self.parts), bytes(data))
        self.parts += 1

    def close(self) -> None:
        self.store.put_json(header_key(self.key), {"version": VERSION, "parts": self.parts, "items": self.items})
        stale = [k for k in self.store.list(self.key + "/") if _part_number(self.key, k) >= self.parts]
        for k in stale:
            self.store.delete_prefix(k)


def _part_number(key: str, found: str) -> int:
    name = found[len(key) + 1:]
    if not (name.startswith("part-") and name.endswith(".jsonl")):
        return -1
    try:
        return int(name[5:-6])
    except ValueError:
        return -1


def write_lines(store: ArtifactStore, key: str, items: Iterable[Any], per_part: int = 100) -> int:
    """Write `items` as a list of parts of `per_part` items each; returns how many were written."""
    writer = LinesWriter(store, key)
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= per_part:
            writer.part(batch)
            batch = []
    if batch or writer.parts == 0:
        writer.part(batch)
    writer.close()
    return writer.items


def lines_header(store: ArtifactStore, key: str) -> dict[str, Any]:
    """The header; a PermanentError naming the list when it is missing (never written, or not finished)."""
    if not store.exists(header_key(key)):
        raise PermanentError(f"artifact {key!r} is missing (no header {header_key(key)!r}: never written, or its "
                             "writer did not finish)")
    header: dict[str, Any] = store.get_json(header_key(key))
    if header.get("version") != VERSION or not isinstance(header.get("parts"), int):
        raise PermanentError(f"artifact {key!r} has a header this version cannot read: {header!r}")
    return header


def read_lines(store: ArtifactStore, key: str) -> Iterator[Any]:
    """Every item, in order, one part in memory at a time. A line that is not JSON is a PermanentError naming the
    part, the line and the item's number in the list; a count that differs from the header's is one too."""
    header = lines_header(store, key)
    seen = 0
    for number in range(int(header["parts"])):
        where = part_key(key, number)
        # the part's bytes, a line decoded at a time: one post's objects in memory, not a part's
        for line_no, line in enumerate(io.BytesIO(store.get_bytes(where)), start=1):
            try:
                item = json.loads(line)
            except ValueError as exc:
                preview = line[:80].decode("utf-8", "replace")
                raise PermanentError(f"artifact {where!r} line {line_no} (item {seen + 1} of {key!r}) is not valid "
                                     f"JSON: {exc}; it starts {preview!r}") from exc
            seen += 1
            yield item
    if seen != int(header.get("items", seen)):
        raise PermanentError(f"artifact {key!r} holds {seen} items, its header says {header['items']}")
