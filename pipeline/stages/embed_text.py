"""embed_text: a vector per post (the original's recipe) and per ~256-token passage.

In the plan → batches → assemble shape of `fanout.py`:
1. plan: the posts, read once, a part at a time. A post whose passages are known (the span cache,
   stores/chunk_spans.py) and whose every vector is in the shared cache needs no batch; the others go whole into
   batches of about `embed_batch` inputs (`batches/NNNNN.json`), a post longer than a batch cut into pieces of
   passages. Vectors the live revision holds (a cold cache on a new machine) go into the cache first.
2. batches: each chunks its posts, counting their tokens (the CPU-heavy part of planning, so on every worker, not
   in one serial plan), embeds the inputs the cache misses (model id, SHA-256 of the text) and lists its inputs
   with their keys (`items/NNNNN.json`);
3. assemble: posts in hash order, each post's passages in order → POST_VECTORS, CHUNK_VECTORS from the cache, and
   `inputs.json`: every input, what was embedded and what came from the cache.
The plan holds one batch of posts at a time, never the corpus's text.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline.catalog import CHUNK_VECTORS, POST_VECTORS, job_key
from pipeline.embedders.select import counting_model, embeddings_skipped, text_embedder, token_counter
from pipeline.models import JSON, StageResult
from pipeline.previous_revision import previous_vectors
from pipeline.settings import Settings
from pipeline.stages.context import BatchContext, StageContext
from pipeline.stages.fanout import run_fanned
from pipeline.stages.parsed_posts import iter_posts
from pipeline.stores.artifacts import ArtifactStore
from pipeline.stores.chunk_spans import SpanCache, Spans
from pipeline.stores.vectors import VectorCache, text_key, write_matrix

DOC_INSTRUCTION = "Represent the document for semantic search:"
CHUNK_TOKENS = 256
# A passage's size in UTF-8 bytes, about (600 in the whole opensource-guide, 700 in til): how a plan that has not
# chunked a post yet guesses its passages, to cut batches of similar work.
BYTES_PER_CHUNK = 650
Input = tuple[JSON, str]  # an input's item (what it belongs to, its cache key) and its text


def run(ctx: StageContext) -> StageResult:
    if embeddings_skipped(ctx.settings, ctx.spec.options):
        return StageResult.done(skipped=True)
    return run_fanned(ctx, _plan, run_batch, _assemble)


def spans_of(settings: Settings, artifacts: ArtifactStore) -> SpanCache:
    return SpanCache(artifacts, counting_model(settings).counter_id, CHUNK_TOKENS)


def _embedded_post(post: JSON) -> JSON:
    """What a batch needs of a post: its hash and slug, the post vector's text parts, its plain text, headings."""
    from pipeline.embedders.chunks import post_embedding_input  # noqa: PLC0415

    return {"hash": post["hash"], "slug": post["slug"], "input": post_embedding_input(post, DOC_INSTRUCTION),
            "headings": [str(t.get("title", "")) for t in post.get("toc") or []], "plain": str(post.get("plain") or "")}


def post_inputs(post: JSON, spans: Spans, first: int = 0, stop: int | None = None) -> Iterator[Input]:
    """The inputs of the passages `first`..`stop` of `post` (and its post vector when `first` is 0), in order."""
    if first == 0:
        text = str(post["input"])
        yield {"kind": "post", "post": post["hash"], "slug": post["slug"], "key": text_key(text)}, text
    plain = str(post["plain"])
    for index, (start, end) in enumerate(spans[first:stop], start=first):
        text = plain[start:end]  # what chunks.py's Chunk.text is
        yield {"kind": "chunk", "post": post["hash"], "index": index, "start": start, "end": end,
               "key": text_key(text)}, text


def chunk_spans(settings: Settings, cache: SpanCache, post: JSON) -> Spans:
    """The passages of `post`, from the span cache or chunked now (and cached)."""
    from pipeline.embedders.chunks import chunk_text  # noqa: PLC0415

    plain, headings = str(post["plain"]), list(post["headings"])
    spans = cache.get(plain, headings)
    if spans is None:
        spans = [(c.start, c.end) for c in chunk_text(plain, token_counter(settings), CHUNK_TOKENS, headings=headings,
                                                        span_tokens=counting_model(settings).span_counter(plain))]
        cache.put(plain, headings, spans)
    return spans


class _Batches:
    """Cuts the posts into batches of about `size` inputs as the plan meets them, writing each when full."""

    def __init__(self, ctx: StageContext, size: int) -> None:
        self.ctx, self.size = ctx, size
        self.pieces: list[JSON] = []
        self.inputs = 0
        self.count = 0

    def add(self, post: JSON, passages: int) -> None:
        """`post` and its ~`passages` passages: whole, or in pieces of `size` passages when it is longer than a batch
        (the last piece takes whatever passages there are past the guess)."""
        if passages + 1 <= self.size:
            self._put({**post, "first": 0, "stop": None}, passages + 1)
            return
        for first in range(0, passages, self.size):
            stop = first + self.size if first + self.size < passages else None
            self._put({**post, "first": first, "stop": stop}, (first == 0) + min(self.size, passages - first))

    def _put(self, piece: JSON, inputs: int) -> None:
        if self.pieces and self.inputs + inputs > self.size:
            self.flush()
        self.pieces.append(piece)
        self.inputs += inputs

    def flush(self) -> None:
        if self.pieces:
            self.ctx.artifacts.put_json(self.ctx.key(f"batches/{self.count:05d}.json"), {"posts": self.pieces})
            self.count += 1
            self.pieces, self.inputs = [], 0


def _plan(ctx: StageContext) -> int:
    embedder = text_embedder(ctx.settings)
    cache = VectorCache(ctx.artifacts, embedder.model_id)
    spans = spans_of(ctx.settings, ctx.artifacts)
    old = previous_vectors(ctx, embedder.model_id, ("posts", "chunks"))
    reused = 0
    for key, vec in old["chunks"].items():
        if vec.size and not cache.has(key):
            cache.put(key, vec)
            reused += 1
    batches = _Batches(ctx, max(1, ctx.settings.embed_batch))
    ready: list[JSON] = []  # the items of posts with every vector cached: assemble's, no batch's
    posts = 0
    for parsed in iter_posts(ctx.artifacts, ctx.job_id):
        posts += 1
        post = _embedded_post(parsed)
        post_key = text_key(post["input"])
        old_vec = old["posts"].get(str(post["hash"]))
        if old_vec is not None and old_vec.size and not cache.has(post_key):
            cache.put(post_key, old_vec)
            reused += 1
        known = spans.get(post["plain"], post["headings"])
        if known is not None:
            items = [item for item, _ in post_inputs(post, known)]
            if all(cache.has(str(item["key"])) for item in items):
                ready.extend(items)
                continue
        guess = len(known) if known is not None else max(1, round(len(post["plain"].encode()) / BYTES_PER_CHUNK))
        batches.add(post, guess)
    batches.flush()
    ctx.artifacts.put_json(ctx.key("plan.json"), {"model": embedder.model_id, "posts": posts, "ready": ready,
                                                  "batches": batches.count, "reused": reused})
    ctx.log(f"embed_text: {posts} posts, {posts - len({i['post'] for i in ready})} to embed in {batches.count} "
            f"batches, {len(ready)} inputs from cache ({reused} vectors from the live revision)")
    return batches.count


def batch_inputs(settings: Settings, artifacts: ArtifactStore, batch: dict[str, Any]) -> list[Input]:
    """Every input of one batch, in order (its pieces chunked, or their spans read from the cache)."""
    spans = spans_of(settings, artifacts)
    return [found for piece in batch["posts"]
            for found in post_inputs(piece, chunk_spans(settings, spans, piece), int(piece["first"]),
                                     None if piece["stop"] is None else int(piece["stop"]))]


def embedded_texts(settings: Settings, artifacts: ArtifactStore, job_id: str, n: int) -> list[str]:
    """The texts batch `n` of a finished job embedded, in the order it sent them (for the benchmarks' floor)."""
    sent = artifacts.get_json(job_key(job_id, "embed_text", f"items/{n:05d}.json"))["embedded"]
    texts = dict((str(item["key"]), text) for item, text in batch_inputs(
        settings, artifacts, artifacts.get_json(job_key(job_id, "embed_text", f"batches/{n:05d}.json"))))
    return [texts[key] for key in sent]


def run_batch(ctx: BatchContext, n: int) -> None:
    """Chunk and embed one batch into the shared cache, then list its inputs. Idempotent: a redelivered batch finds
    the vectors its earlier run wrote and writes the same list."""
    inputs = batch_inputs(ctx.settings, ctx.artifacts, ctx.artifacts.get_json(ctx.key(f"batches/{n:05d}.json")))
    embedder = text_embedder(ctx.settings)
    cache = VectorCache(ctx.artifacts, embedder.model_id)
    todo: dict[str, str] = {}
    for item, text in inputs:
        if item["key"] not in todo and not cache.has(str(item["key"])):
            todo[str(item["key"])] = text
    if todo:
        for key, vec in zip(todo, embedder.embed(list(todo.values())), strict=True):
            cache.put(key, vec)
    ctx.artifacts.put_json(ctx.key(f"items/{n:05d}.json"), {"items": [item for item, _ in inputs],
                                                            "embedded": list(todo)})


def _assemble(ctx: StageContext, total: int) -> StageResult:
    plan: JSON = ctx.artifacts.get_json(ctx.key("plan.json"))
    cache = VectorCache(ctx.artifacts, str(plan["model"]))
    items: list[JSON] = list(plan["ready"])
    embedded: set[str] = set()
    for n in range(total):
        out = ctx.artifacts.get_json(ctx.key(f"items/{n:05d}.json"))
        items.extend(out["items"])
        embedded.update(out["embedded"])
    posts = sorted((i for i in items if i["kind"] == "post"), key=lambda i: str(i["post"]))
    chunks = sorted((i for i in items if i["kind"] == "chunk"), key=lambda i: (str(i["post"]), int(i["index"])))
    cached = sum(1 for i in items if i["key"] not in embedded)
    post_rows = cache.stack(str(p["key"]) for p in posts)
    # A matrix with no rows still has the model's width: known from the other matrix, else from the model itself.
    cache.dim = int(post_rows.shape[1]) if posts else text_embedder(ctx.settings).dim
    header = {"model": plan["model"]}
    write_matrix(ctx.artifacts, POST_VECTORS.key(ctx.job_id), post_rows if posts else cache.stack(()),
                 {**header, "ids": [p["post"] for p in posts], "slugs": [p["slug"] for p in posts]})
    write_matrix(ctx.artifacts, CHUNK_VECTORS.key(ctx.job_id), cache.stack(str(c["key"]) for c in chunks),
                 {**header, "ids": [c["post"] for c in chunks],
                  "chunks": [{"post": c["post"], "index": c["index"], "start": c["start"], "end": c["end"]}
                             for c in chunks]})
    ctx.artifacts.put_json(ctx.key("inputs.json"), {"model": plan["model"], "items": posts + chunks,
                                                    "embedded": len(embedded), "cached": cached, "batches": total})
    return StageResult.done(model=plan["model"], posts=len(posts), chunks=len(chunks), embedded=len(embedded),
                            cached=cached, batches=total).counting(
        items=len(items), hits={"vectors": cached}, misses={"vectors": len(embedded)})
