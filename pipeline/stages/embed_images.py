"""embed_images: the `_medias/` variants of every raster image, and a vector per image.

In the plan → batches → assemble shape of `fanout.py`:
1. plan: every raster whose variants or vector are not cached yet goes into a batch
   (`batches/NNNNN.json`); variants are cached by the source's SHA-256, vectors by (model, input);
2. batches: resize (and embed) a few images each, on whichever worker takes them; a bad image is an
   item error, cached too, so it is decoded once and reported by every job that meets it;
3. assemble: VARIANTS ({hash: [variant info]}) for publish, and MEDIA_VECTORS, the
   image vectors with a header naming the model and the kind of vector:
   - `clip`: a CLIP image tower, when a CLIP model is configured (clip-by-text searches them);
   - `caption`: the text model over what the repository says about the image (captions.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.catalog import MEDIA_VECTORS, MEDIAS, PARSE_META, SOURCE_TREE, VARIANTS, VARIANTS_IN_BUCKET
from pipeline.embedders.image import ClipEmbedder, load_clip
from pipeline.embedders.select import embeddings_skipped, text_embedder
from pipeline.embedders.text import TextEmbedder
from pipeline.errors import ItemError, PermanentError
from pipeline.images.captions import image_captions
from pipeline.images.clip_input import Pixels
from pipeline.images.decode import DEFAULT_MAX_PIXELS, SizeNeeded, open_image
from pipeline.images.variant_cache import VariantCache
from pipeline.images.variants import largest_size, variants_of
from pipeline.markdown.media import entry_resized
from pipeline.models import JSON, Issue, StageResult
from pipeline.previous_revision import previous_variants, previous_vectors
from pipeline.stages.context import BatchContext, StageContext
from pipeline.stages.fanout import run_fanned
from pipeline.stages.parsed_posts import iter_posts
from pipeline.stores.vectors import VectorCache, text_key, write_matrix

STAGE = "embed_images"
IMAGES_PER_BATCH = 8  # at most: a 12 MP photo takes ~0.7 s to resize, a batch stays well inside a task's budget
# A job with few images to do still splits them into this many batches, so that two pool processes share them
# (10 images: 3+3+3+1 instead of 8+2, one process idle while the other does 8).
MIN_BATCHES = 4


class _Vectors:
    """Where this job's image vectors come from and are cached."""

    def __init__(self, ctx: StageContext | BatchContext) -> None:
        self.clip: ClipEmbedder | None = load_clip(ctx.settings.clip_model_dir)
        self.text: TextEmbedder | None = None
        if self.clip is not None:
            self.kind, self.model_id, self.dim = "clip", self.clip.model_id, self.clip.dim
        else:
            self.text = text_embedder(ctx.settings)
            self.kind, self.model_id, self.dim = "caption", self.text.model_id, self.text.dim
        self.cache = VectorCache(ctx.artifacts, self.model_id, self.dim)

    def key(self, item: JSON) -> str:
        return vector_key(self.kind, item)


def vector_key(kind: str, item: JSON) -> str:
    """An image vector's cache key: a CLIP vector depends on the pixels only, a caption vector on the caption."""
    return str(item["hash"]) if kind == "clip" else text_key(str(item["caption"]))


def images_per_batch(todo: int) -> int:
    """At most IMAGES_PER_BATCH, fewer when that would leave fewer than MIN_BATCHES batches."""
    return max(1, min(IMAGES_PER_BATCH, -(-todo // MIN_BATCHES)))


def run(ctx: StageContext) -> StageResult:
    return run_fanned(ctx, _plan, run_batch, _assemble)


def _items(ctx: StageContext) -> list[JSON]:
    medias: list[JSON] = ctx.artifacts.get_json(MEDIAS.key(ctx.job_id))
    captions = image_captions(iter_posts(ctx.artifacts, ctx.job_id), medias)
    items: dict[str, JSON] = {}
    for media in sorted(medias, key=lambda m: str(m["originalPath"])):
        h = str(media["hash"])
        if entry_resized(media) and h not in items:  # the same bytes at two paths are one image
            items[h] = {"hash": h, "path": media["originalPath"], "caption": captions.get(h, "")}
    return list(items.values())


def _plan(ctx: StageContext) -> int:
    items = _items(ctx)
    variants = VariantCache(ctx.artifacts)
    remote = previous_variants(ctx)  # already resized in the project's bucket: not encoded again
    vectors = None if embeddings_skipped(ctx.settings, ctx.spec.options) else _Vectors(ctx)
    old = previous_vectors(ctx, vectors.model_id, ("medias",))["medias"] if vectors and vectors.kind == "clip" else {}
    todo = []
    cache = {"variants_hit": 0, "vectors_hit": 0, "vectors_miss": 0}  # for the metrics (StageResult.counts)
    for item in items:
        sha = str(item["hash"])
        known = variants.known(sha)
        item["remote"] = sha in remote and not known
        cache["variants_hit"] += known or item["remote"]
        needs_vector = False
        if vectors is not None and variants.error(sha) is None:
            key = vectors.key(item)
            if not vectors.cache.has(key):
                if sha in old and old[sha].shape == (vectors.dim,):
                    vectors.cache.put(key, old[sha])  # the live revision's vector: a cold cache need not redo it
                else:
                    needs_vector = True
            cache["vectors_miss" if needs_vector else "vectors_hit"] += 1
        if (not known and not item["remote"]) or needs_vector:
            todo.append(item)
    per = images_per_batch(len(todo))
    batches = [todo[k:k + per] for k in range(0, len(todo), per)]
    for n, batch in enumerate(batches):
        ctx.artifacts.put_json(ctx.key(f"batches/{n:05d}.json"), {"items": batch})
    ctx.artifacts.put_json(ctx.key("plan.json"), {
        "items": items, "processed": len(todo), "cached": len(items) - len(todo), "cache": cache,
        "remote": {sha: [i._asdict() for i in infos] for sha, infos in remote.items()},
        "vectors": None if vectors is None else {"kind": vectors.kind, "model": vectors.model_id, "dim": vectors.dim},
    })
    ctx.log(f"embed_images: {len(items)} images, {len(todo)} to process in {len(batches)} batches, "
            f"{len(items) - len(todo)} from cache, {sum(1 for i in items if i['remote'])} resized in the bucket")
    return len(batches)


def run_batch(ctx: BatchContext, n: int) -> None:
    """Resize and embed one batch into the shared caches. Idempotent: a redelivered batch redoes nothing."""
    batch: dict[str, Any] = ctx.artifacts.get_json(ctx.key(f"batches/{n:05d}.json"))
    meta: JSON = ctx.artifacts.get_json(PARSE_META.key(ctx.job_id))
    root = ctx.artifacts.tree(SOURCE_TREE.key(ctx.job_id)) / str(meta.get("root") or "")
    variants = VariantCache(ctx.artifacts)
    plan: JSON = ctx.artifacts.get_json(ctx.key("plan.json"))
    vectors = _Vectors(ctx) if plan.get("vectors") else None
    readable: list[tuple[JSON, bytes, ClipInput]] = []
    for item in batch["items"]:
        sha, path = str(item["hash"]), str(item["path"])
        if variants.error(sha) is not None:
            continue
        try:
            data = (root / path).read_bytes()
        except OSError as exc:
            # The fetched tree is this job's own copy: a missing file is a bug or a disk fault, not bad input.
            raise PermanentError(f"{path}: cannot read image from the fetched tree: {exc.strerror or exc}") from exc
        clip_input: ClipInput = None
        if not variants.known(sha) and not item.get("remote"):
            clip = vectors.clip if vectors is not None and not vectors.cache.has(vectors.key(item)) else None
            try:
                clip_input = _resize(variants, sha, data, path, clip)
            except ItemError as exc:
                variants.put_error(sha, exc.reason)
                continue
        readable.append((item, data, clip_input))
    if vectors is not None and readable:
        _embed(vectors, readable)


# CLIP's input, made from the picture decoded for the variants; None when it was not (the variants were cached).
ClipInput = Pixels | ItemError | None


def _resize(variants: VariantCache, sha: str, data: bytes, path: str, clip: ClipEmbedder | None) -> ClipInput:
    """The variants into the cache and, when `clip` wants this image, its input from the same decode: decoding
    is a tenth of the variants' time on the corpora and more on large photos, so it is not done twice."""
    needed: SizeNeeded = largest_size
    if clip is not None:
        config = clip.image_config

        def needed(w: int, h: int) -> tuple[int, int]:  # what both the variants and CLIP resize down from
            (vw, vh), (cw, ch) = largest_size(w, h), config.needed(w, h)
            return max(vw, cw), max(vh, ch)
    decoded = open_image(data, path, DEFAULT_MAX_PIXELS, needed=needed)
    variants.put(sha, variants_of(decoded, path))
    if clip is None:
        return None
    try:
        return clip.prepare(decoded.image, path)
    except ItemError as exc:
        return exc  # it resized, CLIP cannot take it: variants without a vector, as assemble reports


def _embed(vectors: _Vectors, readable: list[tuple[JSON, bytes, ClipInput]]) -> None:
    todo = [entry for entry in readable if not vectors.cache.has(vectors.key(entry[0]))]
    if not todo:
        return
    if vectors.clip is not None:
        clip = vectors.clip
        result = clip.embed_prepared([ready if ready is not None else _clip_input(clip, data, str(item["path"]))
                                      for item, data, ready in todo])
        for row, index in enumerate(result.indices):
            vectors.cache.put(str(todo[index][0]["hash"]), result.vectors[row])
        # An image that resized but that CLIP cannot take keeps its variants and has no vector;
        # assemble reports it.
        return
    assert vectors.text is not None
    captions = [str(i["caption"]) for i, _, _ in todo]
    for caption, vec in zip(captions, vectors.text.embed(captions), strict=True):
        vectors.cache.put(text_key(caption), vec)


def _clip_input(clip: ClipEmbedder, data: bytes, path: str) -> Pixels | ItemError:
    try:
        return clip.prepare(open_image(data, path, clip.max_pixels).image, path)
    except ItemError as exc:
        return exc


def _assemble(ctx: StageContext, total: int) -> StageResult:
    plan: JSON = ctx.artifacts.get_json(ctx.key("plan.json"))
    variants = VariantCache(ctx.artifacts)
    sizes: dict[str, list[JSON]] = {}
    failed = 0
    remote: dict[str, list[JSON]] = plan.get("remote") or {}
    remote_used: list[str] = []
    for item in plan["items"]:
        sha = str(item["hash"])
        infos = variants.infos(sha)
        if infos is None and item.get("remote"):
            sizes[sha] = remote[sha]
            remote_used.append(sha)
            continue
        if infos is None:
            failed += 1
            reason = variants.error(sha) or "image was not resized"
            ctx.record_issue(Issue(stage=STAGE, path=str(item["path"]), message=reason, severity="error",
                                   kind="item"))
            continue
        sizes[sha] = [i._asdict() for i in infos]
    ctx.artifacts.put_json(VARIANTS.key(ctx.job_id), sizes)
    # In the bucket already: publish lists them in medias.json without copying their files.
    ctx.artifacts.put_json(VARIANTS_IN_BUCKET.key(ctx.job_id), sorted(remote_used))
    vectors = plan.get("vectors")
    embedded = 0
    if vectors:
        cache = VectorCache(ctx.artifacts, str(vectors["model"]), int(vectors["dim"]))
        ids: list[str] = []
        rows = []
        for item in plan["items"]:
            key = vector_key(str(vectors["kind"]), item)
            if str(item["hash"]) in sizes and cache.has(key):
                ids.append(str(item["hash"]))
                rows.append(cache.get(key))
            elif str(item["hash"]) in sizes:
                ctx.record_issue(Issue(stage=STAGE, path=str(item["path"]), severity="warning", kind="item",
                                       message=f"no {vectors['kind']} vector: the model could not read the image"))
        matrix = np.stack(rows) if rows else np.zeros((0, int(vectors["dim"])), dtype=np.float32)
        write_matrix(ctx.artifacts, MEDIA_VECTORS.key(ctx.job_id), matrix,
                     {"model": vectors["model"], "kind": vectors["kind"], "ids": ids})
        embedded = len(ids)
    seen: dict[str, int] = plan.get("cache") or {}
    images = len(plan["items"])
    return StageResult.done(images=images, processed=int(plan["processed"]), cached=int(plan["cached"]),
                            resized=len(sizes), failed=failed, vectors=embedded, batches=total).counting(
        items=images, hits={"variants": seen.get("variants_hit", 0), "vectors": seen.get("vectors_hit", 0)},
        misses={"variants": images - seen.get("variants_hit", 0), "vectors": seen.get("vectors_miss", 0)})
