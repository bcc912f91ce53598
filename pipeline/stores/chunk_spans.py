"""Where chunking cut a post, at rest: a shared cache of passage spans by (tokenizer, chunk size, chunking version,
SHA-256 of the post's plain text and headings).

Chunking counts every token of a post: two seconds of CPU for til, 0.74 M tokens, on every build. With the spans
cached, the plan of a rebuild knows each unchanged post's passages, and so their vectors' keys, without tokenising:
a rebuild that finds every vector cached sends no batch at all. An entry that is not a list of ascending spans
inside the text is read as missing (and chunked again), never trusted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from pipeline.stores.artifacts import ArtifactStore
from pipeline.stores.vectors import model_folder

CHUNKING_VERSION = 1  # bump when chunks.py cuts differently: spans cached by an older chunker are not reused
Spans = list[tuple[int, int]]


class SpanCache:
    def __init__(self, artifacts: ArtifactStore, counter_id: str, max_tokens: int) -> None:
        self.artifacts = artifacts
        self.prefix = f"cache/chunks/{model_folder(counter_id)}-{max_tokens}-v{CHUNKING_VERSION}"

    def key(self, plain: str, headings: Sequence[str]) -> str:
        digest = hashlib.sha256(json.dumps([plain, list(headings)], ensure_ascii=False).encode()).hexdigest()
        return f"{self.prefix}/{digest[:2]}/{digest}.json"

    def get(self, plain: str, headings: Sequence[str]) -> Spans | None:
        key = self.key(plain, headings)
        if not self.artifacts.exists(key):
            return None
        try:
            found = self.artifacts.get_json(key)
        except ValueError:  # cut short or garbled: chunk the post again, which rewrites the entry
            return None
        spans: Spans = []
        for span in found if isinstance(found, list) else [None]:
            if not (isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) for x in span)):
                return None
            start, end = span
            if not (spans[-1][1] if spans else 0) <= start < end <= len(plain):
                return None
            spans.append((start, end))
        return spans

    def put(self, plain: str, headings: Sequence[str], spans: Spans) -> None:
        self.artifacts.put_json(self.key(plain, headings), [list(s) for s in spans])
