"""enrich: related posts, backlinks and reading time, all deterministic.

- `result/posts-similarity.json`: `{"<hA>-<hB>": cosine}` for every pair with hA < hB (the original's file);
- `result/posts-similar-hash.json`: `{hash: [top 10 hashes, most similar first]}`;
- `result/enrichment.json`: `{hash: {backlinks: [...], readingTime: minutes}}`, merged into posts by publish.
Cosines are rounded to 6 decimals so float noise between machines never changes the bundle.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from pipeline.models import JSON, StageResult
from pipeline.stages.context import StageContext
from pipeline.vectors import has_matrix, read_matrix

TOP_K = 10
WORDS_PER_MINUTE = 200


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
    posts: list[JSON] = ctx.artifacts.get_json(ctx.key("result/posts.json", stage="parse"))
    back = backlinks(posts)
    enrichment = {
        str(p["hash"]): {"backlinks": back.get(str(p["hash"]), []),
                         "readingTime": max(1, math.ceil(int(p.get("wordCount") or 0) / WORDS_PER_MINUTE))}
        for p in posts
    }
    ctx.artifacts.put_json(ctx.key("result/enrichment.json"), enrichment)
    vectors_key = ctx.key("result/posts", stage="embed_text")
    pairs: dict[str, float] = {}
    top: dict[str, list[str]] = {}
    if has_matrix(ctx.artifacts, vectors_key):
        vectors, header = read_matrix(ctx.artifacts, vectors_key)
        pairs, top = similarity([str(i) for i in header["ids"]], vectors)
    ctx.artifacts.put_json(ctx.key("result/posts-similarity.json"), pairs)
    ctx.artifacts.put_json(ctx.key("result/posts-similar-hash.json"), top)
    return StageResult.done(posts=len(posts), pairs=len(pairs), backlinks=sum(len(v) for v in back.values()))
