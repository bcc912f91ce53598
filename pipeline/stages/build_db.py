"""build_db: posts, medias and graph of the parse stage → content.sqlite (see pipeline/bundle_db/schema.py).

Two modes. In a pipeline the inputs are the parse stage's artifacts and the database becomes this
stage's artifact (CONTENT_DB). For the original's `build-database` task (`assets.distFolder` or `distFolder`
in the options) the inputs are read from that folder and content.sqlite is written there, replaced
in one rename so a reader of the folder never sees half a database.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.bundle_db.schema import DbCounts, Posts, write_content_db
from pipeline.bundle_db.vectors import Vectors, add_vectors
from pipeline.catalog import CHUNK_VECTORS, CONTENT_DB, GRAPH, MEDIA_VECTORS, MEDIAS, POST_VECTORS
from pipeline.errors import PermanentError
from pipeline.models import Issue, StageResult
from pipeline.sources.dist_folder import dist_folder, read_dist_json
from pipeline.stages.context import StageContext
from pipeline.stages.parsed_posts import iter_posts, posts_parsed
from pipeline.stores.vectors import has_matrix, matrix_blocks, matrix_header

DB_NAME = "content.sqlite"


def _read_folder(folder: Path) -> tuple[Posts, list[dict[str, Any]], dict[str, Any] | None]:
    posts = read_dist_json(folder, "posts.json", required="build-database needs a dist folder holding posts.json")
    # The original also accepted `{"posts": [...]}`.
    if isinstance(posts, dict):
        posts = posts.get("posts") or []
    return posts, read_dist_json(folder, "medias.json") or [], read_dist_json(folder, "graph.json")


def _read_artifacts(ctx: StageContext) -> tuple[Posts, list[dict[str, Any]], dict[str, Any] | None]:
    """The posts as a stream (read twice by write_content_db, a part at a time), the medias and graph whole."""
    store, job_id = ctx.artifacts, ctx.job_id

    def posts() -> Iterator[dict[str, Any]]:
        for post in iter_posts(store, job_id):
            _check_post(post)
            yield post

    medias = store.get_json(MEDIAS.key(job_id)) if store.exists(MEDIAS.key(job_id)) else []
    graph = store.get_json(GRAPH.key(job_id)) if store.exists(GRAPH.key(job_id)) else None
    return posts, medias, graph


def _check_post(post: Any) -> None:
    if not isinstance(post, dict) or not post.get("hash"):
        raise PermanentError("posts.json must be a list of post entries, each with a hash")


def _check(posts: Posts, medias: Any) -> None:
    if not callable(posts):
        if not isinstance(posts, list):
            raise PermanentError("posts.json must be a list of post entries, each with a hash")
        for post in posts:
            _check_post(post)
    if not isinstance(medias, list) or not all(isinstance(m, dict) for m in medias):
        raise PermanentError("medias.json must be a list of media entries")


def build(folder: Path, posts: Posts, medias: list[dict[str, Any]],
          graph: dict[str, Any] | None) -> tuple[Path, DbCounts]:
    """Write the database to a fresh temporary file in `folder`; the caller moves or removes it."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".content-", suffix=".sqlite")
    os.close(fd)
    path = Path(tmp)  # SQLite takes an empty file for an empty database
    try:
        return path, write_content_db(path, posts, medias, graph)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def run(ctx: StageContext) -> StageResult:
    # A job that parsed a repository builds from its own parse output even if its options also name
    # a dist folder; the folder is the input only of jobs without a parse stage (build-database).
    parsed = posts_parsed(ctx.artifacts, ctx.job_id)
    folder = None if parsed else dist_folder(ctx.spec.options, ctx.settings.local_source_roots)
    posts: Posts
    if folder is not None:
        posts, medias, graph = _read_folder(folder)
        scratch = folder
    else:
        posts, medias, graph = _read_artifacts(ctx)
        scratch = Path(ctx.settings.temp_dir)
        scratch.mkdir(parents=True, exist_ok=True)
    _check(posts, medias)

    tmp, counts = build(scratch, posts, medias, graph)
    try:
        vector_counts = _add_vectors(ctx, tmp)
        size = tmp.stat().st_size
        if folder is not None:
            os.replace(tmp, folder / DB_NAME)
        else:
            ctx.artifacts.put_file(CONTENT_DB.key(ctx.job_id), tmp)
    finally:
        tmp.unlink(missing_ok=True)

    if counts.dropped_columns:
        ctx.record_issue(Issue(
            stage=ctx.stage, path=DB_NAME, severity="warning", kind="config",
            message=f"{len(counts.dropped_columns)} rarely used frontmatter keys have no column of their own "
                    f"(they stay in _frontmatter): {', '.join(counts.dropped_columns[:10])}"))
    ctx.log(f"content.sqlite: {counts.posts} posts, {counts.medias} medias, {counts.tags} tags, "
            f"{counts.links} links, {counts.frontmatter_columns} frontmatter columns, {size} bytes")
    summary: dict[str, Any] = {"posts": counts.posts, "medias": counts.medias, "tags": counts.tags,
                               "links": counts.links, "bytes": size}
    summary.update(vector_counts)
    if folder is not None:
        summary["path"] = str(folder / DB_NAME)
    return StageResult.done(**summary).counting(items=counts.posts + counts.medias)


def _add_vectors(ctx: StageContext, db: Path) -> dict[str, int]:
    """The embed stages' matrices as sqlite-vec tables, when this job computed them, read a block at a time."""
    store = ctx.artifacts
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, artifact in (("posts", POST_VECTORS), ("chunks", CHUNK_VECTORS), ("medias", MEDIA_VECTORS)):
        key = artifact.key(ctx.job_id)
        if has_matrix(store, key):
            found[name] = (key, matrix_header(store, key))
    if not found:
        return {}

    def vectors(name: str, ids_field: str) -> Vectors | None:
        if name not in found:
            return None
        key, header = found[name]
        ids = [str(i) for i in header[ids_field]] if ids_field == "ids" else list(header[ids_field])
        return Vectors(ids, matrix_blocks(store, key, header), int(header["dim"]), str(header.get("model")))

    model = str(found["posts"][1].get("model")) if "posts" in found else None
    return add_vectors(db, model=model, posts=vectors("posts", "ids"), chunks=vectors("chunks", "chunks"),
                       medias=vectors("medias", "ids"))
