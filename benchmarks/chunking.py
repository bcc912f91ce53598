"""Diagnosis of embed_text's input planning: its chunking as shipped, and with true token counts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.floor import plain_tokenizer
from benchmarks.guide_corpus import ROOT
from benchmarks.harness import Run
from pipeline.models import JobSpec, SourceSpec
from pipeline.settings import Settings
from pipeline.stages.context import LocalContext
from pipeline.stages.parsed_posts import iter_posts
from pipeline.stores.artifacts import LocalArtifactStore


@dataclass
class Chunking:
    label: str
    seconds: float
    chunks: int
    over_limit: int  # chunks longer than the model's 256 tokens (true count)
    tokens: int  # true tokens in all chunk texts
    seen: int  # of those, what the model sees (the first 256 of each chunk)
    calls: int


def diagnose_chunking(settings: Settings, run: Run) -> tuple[list[Chunking], tuple[int, int, str]]:
    """The stage's input planning on the cold job's parsed posts: as shipped (embed_text._inputs) and with
    true token counts; also what the stage's token counter says about the longest post."""
    from pipeline.embedders.chunks import chunk_text
    from pipeline.embedders.select import token_counter
    from pipeline.stages import embed_text

    artifacts = LocalArtifactStore(settings.artifacts)
    job_id = run.job.spec.job_id
    posts: list[dict[str, Any]] = list(iter_posts(artifacts, job_id))
    tok = plain_tokenizer(settings)

    def true_count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    shipped = token_counter(settings)
    longest = max(posts, key=lambda p: len(str(p.get("plain") or "")))
    plain = str(longest.get("plain") or "")
    counter = (shipped(plain), true_count(plain), str(longest.get("slug")))

    def summarise(label: str, seconds: float, texts: list[str], calls: int) -> Chunking:
        counts = [true_count(t) for t in texts]
        limit = embed_text.CHUNK_TOKENS
        return Chunking(label, seconds, len(texts), sum(c > limit for c in counts), sum(counts),
                        sum(min(c, limit) for c in counts), calls)

    calls = [0]

    def counted(fn: Callable[[str], int]) -> Callable[[str], int]:
        def wrapped(text: str) -> int:
            calls[0] += 1
            return fn(text)
        return wrapped

    # as shipped: the stage's own _inputs, on a LocalContext reading the cold job's parse output
    spec = JobSpec(job_id=job_id, task="process-all", source=SourceSpec(path=str(ROOT)))
    ctx = LocalContext(job_id=job_id, stage="embed_text", spec=spec, settings=settings, artifacts=artifacts)
    t0 = time.perf_counter()
    items, texts = embed_text._inputs(ctx)
    as_shipped = time.perf_counter() - t0
    chunk_texts = [t for i, t in zip(items, texts, strict=True) if i["kind"] == "chunk"]
    out = [summarise("as shipped (embed_text._inputs)", as_shipped, chunk_texts, 0)]
    # the same chunker with true token counts, for comparison
    wrapped = counted(true_count)
    t0 = time.perf_counter()
    chunks = [c.text for p in sorted(posts, key=lambda p: str(p["hash"]))
              for c in chunk_text(str(p.get("plain") or ""), wrapped, embed_text.CHUNK_TOKENS,
                                  headings=[str(t.get("title", "")) for t in p.get("toc") or []])]
    out.append(summarise("same chunk_text, true token counts", time.perf_counter() - t0, chunks, calls[0]))
    return out, counter
