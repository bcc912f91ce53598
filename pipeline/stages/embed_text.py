"""embed_text: a vector per post (the original's recipe) and per ~256-token passage.

In the plan → batches → assemble shape of `fanout.py`:
1. plan: build every input text, look each up in the shared cache by (model id, SHA-256 of the
   text), and cut the misses into length-sorted batches (`batches/NNNNN.json`), so padding to the
   longest in a batch costs little;
2. batches: each embeds its texts on whichever worker takes it, writing the vectors to the cache;
3. assemble: post and passage matrices in a fixed order from the cache → POST_VECTORS, CHUNK_VECTORS.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.catalog import CHUNK_VECTORS, POST_VECTORS
from pipeline.embedders.select import embeddings_skipped, span_counters, text_embedder, token_counter
from pipeline.models import JSON, StageResult
from pipeline.previous_revision import previous_vectors
from pipeline.stages.context import BatchContext, StageContext
from pipeline.stages.fanout import run_fanned
from pipeline.stages.parsed_posts import iter_posts
from pipeline.stores.vectors import Matrix, VectorCache, text_key, write_matrix

DOC_INSTRUCTION = "Represent the document for semantic search:"
CHUNK_TOKENS = 256


def run(ctx: StageContext) -> StageResult:
    if embeddings_skipped(ctx.settings, ctx.spec.options):
        return StageResult.done(skipped=True)
    return run_fanned(ctx, _plan, _assemble)


def _inputs(ctx: StageContext) -> tuple[list[JSON], list[str]]:
    """Every text to embed with what it belongs to, in a fixed order: posts, then their chunks."""
    from pipeline.embedders.chunks import chunk_text, post_embedding_input  # noqa: PLC0415

    # Of each post only what is embedded is kept (not its HTML), read a part at a time, then put in hash order.
    posts = sorted(({"hash": p["hash"], "slug": p["slug"], "input": post_embedding_input(p, DOC_INSTRUCTION),
                     "headings": [str(t.get("title", "")) for t in p.get("toc") or []], "plain": p.get("plain")}
                    for p in iter_posts(ctx.artifacts, ctx.job_id)), key=lambda p: str(p["hash"]))
    count = token_counter(ctx.settings)
    plains = [str(post.get("plain") or "") for post in posts]
    items: list[JSON] = []
    texts: list[str] = []
    for post, plain, spans in zip(posts, plains, span_counters(ctx.settings, plains), strict=True):
        items.append({"kind": "post", "post": post["hash"], "slug": post["slug"]})
        texts.append(post["input"])
        for chunk in chunk_text(plain, count, CHUNK_TOKENS, headings=post["headings"], span_tokens=spans):
            items.append({"kind": "chunk", "post": post["hash"], "index": chunk.index, "start": chunk.start,
                          "end": chunk.end})
            texts.append(chunk.text)
    return items, texts


def _plan(ctx: StageContext) -> int:
    embedder = text_embedder(ctx.settings)
    cache = VectorCache(ctx.artifacts, embedder.model_id, embedder.dim)
    items, texts = _inputs(ctx)
    old = previous_vectors(ctx, embedder.model_id, ("posts", "chunks"))
    misses: dict[str, str] = {}
    reused = 0
    for item, text in zip(items, texts, strict=True):
        item["key"] = key = text_key(text)
        if key in misses or cache.has(key):
            continue
        # The live revision in the bucket may hold this very vector (a cold cache on a new machine).
        vec = old["posts"].get(str(item["post"])) if item["kind"] == "post" else old["chunks"].get(key)
        if vec is not None and vec.shape == (embedder.dim,):
            cache.put(key, vec)
            reused += 1
        else:
            misses[key] = text
    # Longest first, so each batch pads to a similar length.
    ordered = sorted(misses.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    size = max(1, ctx.settings.embed_batch)
    batches = [ordered[i:i + size] for i in range(0, len(ordered), size)]
    for n, batch in enumerate(batches):
        ctx.artifacts.put_json(ctx.key(f"batches/{n:05d}.json"),
                               {"keys": [k for k, _ in batch], "texts": [t for _, t in batch]})
    cached = sum(1 for i in items if i["key"] not in misses)
    ctx.artifacts.put_json(ctx.key("plan.json"), {"model": embedder.model_id, "dim": embedder.dim, "items": items,
                                                  "embedded": len(misses), "cached": cached,
                                                  "batches": len(batches)})
    ctx.log(f"embed_text: {len(items)} inputs, {len(misses)} to embed in {len(batches)} batches, {cached} from cache "
            f"({reused} of them from the live revision)")
    return len(batches)


def run_batch(ctx: BatchContext, n: int) -> None:
    """Embed one batch into the shared cache. Idempotent: a redelivered batch rewrites the same vectors."""
    batch: dict[str, Any] = ctx.artifacts.get_json(ctx.key(f"batches/{n:05d}.json"))
    embedder = text_embedder(ctx.settings)
    cache = VectorCache(ctx.artifacts, embedder.model_id, embedder.dim)
    todo = [(k, t) for k, t in zip(batch["keys"], batch["texts"], strict=True) if not cache.has(k)]
    if not todo:
        return
    vectors = embedder.embed([t for _, t in todo])
    for (key, _), vec in zip(todo, vectors, strict=True):
        cache.put(key, vec)


def _assemble(ctx: StageContext, total: int) -> StageResult:
    plan: JSON = ctx.artifacts.get_json(ctx.key("plan.json"))
    cache = VectorCache(ctx.artifacts, str(plan["model"]), int(plan["dim"]))
    posts = [i for i in plan["items"] if i["kind"] == "post"]
    chunks = [i for i in plan["items"] if i["kind"] == "chunk"]

    def matrix(rows: list[JSON]) -> Matrix:
        if not rows:
            return np.zeros((0, int(plan["dim"])), dtype=np.float32)
        return np.stack([cache.get(str(r["key"])) for r in rows])

    header = {"model": plan["model"]}
    write_matrix(ctx.artifacts, POST_VECTORS.key(ctx.job_id), matrix(posts),
                 {**header, "ids": [p["post"] for p in posts], "slugs": [p["slug"] for p in posts]})
    write_matrix(ctx.artifacts, CHUNK_VECTORS.key(ctx.job_id), matrix(chunks),
                 {**header, "ids": [c["post"] for c in chunks],
                  "chunks": [{"post": c["post"], "index": c["index"], "start": c["start"], "end": c["end"]}
                             for c in chunks]})
    return StageResult.done(model=plan["model"], posts=len(posts), chunks=len(chunks), embedded=int(plan["embedded"]),
                            cached=int(plan["cached"]), batches=total).counting(
        items=len(plan["items"]), hits={"vectors": int(plan["cached"])}, misses={"vectors": int(plan["embedded"])})
