"""enrich: related posts, backlinks and reading time, all deterministic.

- POST_SIMILARITY (`posts-similarity.json`): `{"<hA>-<hB>": cosine}` for every pair with hA < hB (the original's);
- SIMILAR_POSTS (`posts-similar-hash.json`): `{hash: [top 10 hashes, most similar first]}`;
- ENRICHMENT: `{hash: {backlinks: [...], readingTime: minutes}}`, merged into posts by publish.
Cosines are rounded to 6 decimals so float noise between machines never changes the bundle.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pipeline.canonical_json import canonical_json
from pipeline.catalog import ENRICHMENT, POST_SIMILARITY, POST_VECTORS, SIMILAR_POSTS, Artifact
from pipeline.models import JSON, StageResult
from pipeline.sources.dist_folder import dist_folder, read_dist_json
from pipeline.stages.context import StageContext
from pipeline.stages.parsed_posts import iter_posts, posts_parsed
from pipeline.stores.artifacts import write_atomic
from pipeline.stores.vectors import has_matrix, read_matrix

TOP_K = 10
WORDS_PER_MINUTE = 200
# What enrich writes, by the name of its file in a bundle (or in the dist folder it enriches in place).
OUTPUTS: dict[str, Artifact] = {"enrichment.json": ENRICHMENT, "posts-similarity.json": POST_SIMILARITY,
                                "posts-similar-hash.json": SIMILAR_POSTS}


BLOCK_ROWS = 256  # similarity rows computed at once: a block x posts float64 matrix, not posts x posts


def write_similarity(out: BinaryIO, ids: list[str], vectors: np.ndarray) -> tuple[dict[str, list[str]], int]:
    """POST_SIMILARITY onto `out`, encoded as `json.dumps` of `{"<hA>-<hB>": cosine}` (pairs in the order of the
    sorted ids, hA < hB) would write it; returns SIMILAR_POSTS as a dict and the number of pairs.

    The pairs are quadratic in the posts, so they are never a dict nor a buffer: a block of rows at a time is
    multiplied, rounded and encoded a row at a time onto `out` (a file, streamed to the store).
    """
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    ids = [ids[i] for i in order]
    vecs = vectors[order].astype(np.float64) if ids else np.zeros((0, 0))
    # each id as it appears inside a JSON string (escaped as json.dumps escapes it), so "a-b" is assembled
    names = [json.dumps(h, ensure_ascii=False)[1:-1] for h in ids]
    n = len(ids)
    index = np.arange(n)
    out.write(b"{")
    first = True
    top: dict[str, list[str]] = {}
    for start in range(0, n, BLOCK_ROWS):
        sims = np.round(vecs[start:start + BLOCK_ROWS] @ vecs.T, 6)
        # repr is how json.dumps writes a finite float; NaN and infinities it spells its own way
        num: Callable[[float], str] = repr if np.isfinite(sims).all() else json.dumps
        for r, row in enumerate(sims):
            i = start + r
            a = names[i]
            if i + 1 < n:
                if not first:
                    out.write(b",")
                first = False
                out.write(",".join(f'"{a}-{names[j]}":{num(v)}'
                                   for j, v in enumerate(row[i + 1:].tolist(), i + 1)).encode("utf-8"))
            # most similar first, ties by id (the ids are sorted, so by index); never the post itself
            ranked = np.lexsort((index, -row))
            top[ids[i]] = [ids[j] for j in ranked[:TOP_K + 1].tolist() if j != i][:TOP_K]
    out.write(b"}")
    return top, n * (n - 1) // 2


def similarity_json(ids: list[str], vectors: np.ndarray) -> tuple[bytearray, dict[str, list[str]], int]:
    """write_similarity into memory: the encoded pairs, SIMILAR_POSTS, the number of pairs (for small inputs)."""
    buf = io.BytesIO()
    top, pairs = write_similarity(buf, ids, vectors)
    return bytearray(buf.getbuffer()), top, pairs


def _sorted_by_pair(ids: list[str]) -> bool:
    """Whether "<hA>-<hB>" keys in pair order are also in sorted-key order: true when every id has one length."""
    return len({len(h) for h in ids}) <= 1


def backlinks(posts: list[JSON]) -> dict[str, list[str]]:
    incoming: dict[str, set[str]] = defaultdict(set)
    for post in posts:
        for target in post.get("links") or []:
            if target != post["hash"]:
                incoming[str(target)].add(str(post["hash"]))
    return {h: sorted(src) for h, src in incoming.items()}


def run(ctx: StageContext) -> StageResult:
    if not posts_parsed(ctx.artifacts, ctx.job_id):
        folder = dist_folder(ctx.spec.options, ctx.settings.local_source_roots)
        if folder is not None:
            return _run_on_folder(ctx, folder)
    vectors_key = POST_VECTORS.key(ctx.job_id)
    ids: list[str] = []
    vectors = np.zeros((0, 0), dtype=np.float32)
    if has_matrix(ctx.artifacts, vectors_key):
        vectors, header = read_matrix(ctx.artifacts, vectors_key)  # a row per post: linear in the posts
        ids = [str(i) for i in header["ids"]]

    def write(name: str, data: bytes | Path) -> None:
        key = OUTPUTS[name].key(ctx.job_id)
        if isinstance(data, Path):
            ctx.artifacts.put_file(key, data)
        else:
            ctx.artifacts.put_bytes(key, data)

    # the artifacts are written as put_json writes (keys in insertion order), so pairs go in pair order
    return _enrich(ctx, iter_posts(ctx.artifacts, ctx.job_id), ids, vectors, write, sorted_keys=False)


def _run_on_folder(ctx: StageContext, folder: Path) -> StageResult:
    """The original's `enrich-data` task: a built dist folder gains its similarity files in place."""
    posts = read_dist_json(folder, "posts.json", required="enrich-data needs a dist folder holding posts.json")
    embedded: dict[str, list[float]] = read_dist_json(folder, "posts-embedding-hash-map.json") or {}
    ids = sorted(embedded)
    vectors = np.array([embedded[h] for h in ids], dtype=np.float32) if ids else np.zeros((0, 0), np.float32)

    def write(name: str, data: bytes | Path) -> None:
        if isinstance(data, Path):
            data = data.read_bytes()  # the folder's own files are bundle-sized already
        if name == "enrichment.json":
            ctx.artifacts.put_bytes(ENRICHMENT.key(ctx.job_id), data)
            return
        # the bundle's own encoding, in a fresh temporary file renamed over the old one: a link planted in the
        # folder is replaced, never written through
        write_atomic(folder / name, data, mode=0o644)

    return _enrich(ctx, posts, ids, vectors, write, sorted_keys=True)


def _enrich(ctx: StageContext, posts: Iterable[JSON], ids: list[str], vectors: np.ndarray,
            write: Callable[[str, bytes | Path], None], sorted_keys: bool) -> StageResult:
    """`sorted_keys`: encode as canonical_json (a bundle file) rather than as the artifact store's put_json.
    `posts` is read once, a post at a time: only hashes, links and word counts are kept."""

    def encode(value: Any) -> bytes:
        if sorted_keys:
            return canonical_json(value)
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()

    heads = [{"hash": p["hash"], "links": p.get("links"), "wordCount": p.get("wordCount")} for p in posts]
    back = backlinks(heads)
    write("enrichment.json", json.dumps({
        str(p["hash"]): {"backlinks": back.get(str(p["hash"]), []),
                         "readingTime": max(1, math.ceil(int(p.get("wordCount") or 0) / WORDS_PER_MINUTE))}
        for p in heads
    }, ensure_ascii=False, separators=(",", ":")).encode())  # an artifact, as put_json writes it
    scratch = Path(ctx.settings.temp_dir)
    scratch.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=scratch, prefix=".similarity-", suffix=".json")
    path = Path(tmp)
    try:
        top: dict[str, list[str]] = {}
        pairs = 0
        with os.fdopen(fd, "wb") as fh:
            if ids:
                top, pairs = write_similarity(fh, ids, vectors)
            else:
                fh.write(b"{}")
        if sorted_keys and not _sorted_by_pair(ids):
            # ids of mixed lengths: sort the keys the slow way
            path.write_bytes(canonical_json(json.loads(path.read_bytes())))
        write("posts-similarity.json", path)
    finally:
        path.unlink(missing_ok=True)
    write("posts-similar-hash.json", encode(top))
    ctx.progress(len(heads), len(heads))
    return StageResult.done(posts=len(heads), pairs=pairs, backlinks=sum(len(v) for v in back.values()))
