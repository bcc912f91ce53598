"""enrich: related posts, backlinks and reading time, all deterministic.

- POST_SIMILARITY (`posts-similarity.json`): `{"<hA>-<hB>": cosine}` for every pair with hA < hB (the original's);
- SIMILAR_POSTS (`posts-similar-hash.json`): `{hash: [top 10 hashes, most similar first]}`;
- ENRICHMENT: `{hash: {backlinks: [...], readingTime: minutes}}`, merged into posts by publish.
Cosines are rounded to 6 decimals so float noise between machines never changes the bundle.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.canonical_json import canonical_json
from pipeline.catalog import ENRICHMENT, POST_SIMILARITY, POST_VECTORS, POSTS, SIMILAR_POSTS, Artifact
from pipeline.models import JSON, StageResult
from pipeline.sources.dist_folder import dist_folder, read_dist_json
from pipeline.stages.context import StageContext
from pipeline.stores.artifacts import write_atomic
from pipeline.stores.vectors import has_matrix, read_matrix

TOP_K = 10
WORDS_PER_MINUTE = 200
# What enrich writes, by the name of its file in a bundle (or in the dist folder it enriches in place).
OUTPUTS: dict[str, Artifact] = {"enrichment.json": ENRICHMENT, "posts-similarity.json": POST_SIMILARITY,
                                "posts-similar-hash.json": SIMILAR_POSTS}


def similarity(ids: list[str], vectors: np.ndarray) -> tuple[dict[str, float], dict[str, list[str]]]:
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    ids = [ids[i] for i in order]
    vecs = vectors[order].astype(np.float64)
    sims = np.round(vecs @ vecs.T, 6) if len(ids) else np.zeros((0, 0))
    pairs: dict[str, float] = {}
    top: dict[str, list[str]] = {}
    for i, a in enumerate(ids):
        for j in range(i + 1, len(ids)):
            pairs[f"{a}-{ids[j]}"] = float(sims[i, j])
        row = [(-sims[i, j], ids[j]) for j in range(len(ids)) if j != i]
        row.sort()
        top[a] = [h for _s, h in row[:TOP_K]]
    return pairs, top


def backlinks(posts: list[JSON]) -> dict[str, list[str]]:
    incoming: dict[str, set[str]] = defaultdict(set)
    for post in posts:
        for target in post.get("links") or []:
            if target != post["hash"]:
                incoming[str(target)].add(str(post["hash"]))
    return {h: sorted(src) for h, src in incoming.items()}


def run(ctx: StageContext) -> StageResult:
    posts_key = POSTS.key(ctx.job_id)
    if not ctx.artifacts.exists(posts_key):
        folder = dist_folder(ctx.spec.options, ctx.settings.local_source_roots)
        if folder is not None:
            return _run_on_folder(ctx, folder)
    posts: list[JSON] = ctx.artifacts.get_json(posts_key)
    vectors_key = POST_VECTORS.key(ctx.job_id)
    ids: list[str] = []
    vectors = np.zeros((0, 0), dtype=np.float32)
    if has_matrix(ctx.artifacts, vectors_key):
        vectors, header = read_matrix(ctx.artifacts, vectors_key)
        ids = [str(i) for i in header["ids"]]
    return _enrich(ctx, posts, ids, vectors, write=lambda name, value: ctx.artifacts.put_json(
        OUTPUTS[name].key(ctx.job_id), value))


def _run_on_folder(ctx: StageContext, folder: Path) -> StageResult:
    """The original's `enrich-data` task: a built dist folder gains its similarity files in place."""
    posts = read_dist_json(folder, "posts.json", required="enrich-data needs a dist folder holding posts.json")
    embedded: dict[str, list[float]] = read_dist_json(folder, "posts-embedding-hash-map.json") or {}
    ids = sorted(embedded)
    vectors = np.array([embedded[h] for h in ids], dtype=np.float32) if ids else np.zeros((0, 0), np.float32)

    def write(name: str, value: Any) -> None:
        if name == "enrichment.json":
            ctx.artifacts.put_json(ENRICHMENT.key(ctx.job_id), value)
            return
        # the bundle's own encoding, in a fresh temporary file renamed over the old one: a link planted in the
        # folder is replaced, never written through
        write_atomic(folder / name, canonical_json(value), mode=0o644)

    return _enrich(ctx, posts, ids, vectors, write)


def _enrich(ctx: StageContext, posts: list[JSON], ids: list[str], vectors: np.ndarray,
            write: Callable[[str, Any], None]) -> StageResult:
    back = backlinks(posts)
    write("enrichment.json", {
        str(p["hash"]): {"backlinks": back.get(str(p["hash"]), []),
                         "readingTime": max(1, math.ceil(int(p.get("wordCount") or 0) / WORDS_PER_MINUTE))}
        for p in posts
    })
    pairs, top = similarity(ids, vectors) if ids else ({}, {})
    write("posts-similarity.json", pairs)
    write("posts-similar-hash.json", top)
    ctx.progress(len(posts), len(posts))
    return StageResult.done(posts=len(posts), pairs=len(pairs), backlinks=sum(len(v) for v in back.values()))
