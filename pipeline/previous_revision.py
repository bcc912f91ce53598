"""What the project's live revision lets a build reuse: its vectors and its images resized in the bucket.

The `existing` stage fetches them (LIVE_DATABASE, LIVE_REVISION); embed_text and embed_images read them
here, so a build on a new machine, with cold caches, still embeds and resizes only what changed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import apsw
import numpy as np

from pipeline.bundle_db.vectors import CHUNK_VEC, MEDIA_VEC, POST_VEC, connect
from pipeline.catalog import LIVE_DATABASE, LIVE_REVISION
from pipeline.images.variants import VariantInfo
from pipeline.models import JSON
from pipeline.stages.context import StageContext
from pipeline.stores.vectors import Matrix, text_key

ByKey = dict[str, Matrix]
# name in vector_models → the rows of that table as (key, embedding): posts by post hash, passages by
# SHA-256 of their text (the embedding cache's key), images by media hash.
_TABLES = {
    "posts": f"SELECT post_id, embedding FROM {POST_VEC}",
    "chunks": f"SELECT c.text, v.embedding FROM chunks c JOIN {CHUNK_VEC} v ON v.chunk_id = c.id",
    "medias": f"SELECT media_id, embedding FROM {MEDIA_VEC}",
}


def _previous_db(ctx: StageContext) -> Path | None:
    key = LIVE_DATABASE.key(ctx.job_id)
    if not ctx.artifacts.exists(key):
        return None
    path = Path(tempfile.mkdtemp(dir=ctx.settings.temp_dir)) / "previous.sqlite"
    path.write_bytes(ctx.artifacts.get_bytes(key))
    return path


def previous_vectors(ctx: StageContext, model_id: str, tables: tuple[str, ...]) -> dict[str, ByKey]:
    """The previous revision's vectors of `tables` (posts, chunks, medias) that `model_id` made.
    A table is empty when the job has no previous revision or another model made it."""
    found: dict[str, ByKey] = {name: {} for name in tables}
    path = _previous_db(ctx)
    if path is None:
        return found
    try:
        con = connect(path, readonly=True)
        try:
            models = {name: model for name, model, _dim in con.execute("SELECT name, model, dim FROM vector_models")}
            for name in tables:
                if models.get(name) == model_id:
                    found[name] = {text_key(str(k)) if name == "chunks" else str(k): _vec(b)
                                   for k, b in con.execute(_TABLES[name])}
        finally:
            con.close()
    except apsw.Error as exc:
        # An old database we cannot read only costs the reuse, never the build.
        ctx.log(f"existing: previous content.sqlite not usable ({exc}); embedding everything", "error")
        return {name: {} for name in tables}
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    return found


def _vec(blob: bytes) -> Matrix:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def previous_variants(ctx: StageContext) -> dict[str, list[VariantInfo]]:
    """Images whose variants are all in the bucket already: {sha: variant info}."""
    key = LIVE_REVISION.key(ctx.job_id)
    if not ctx.artifacts.exists(key):
        return {}
    found: dict[str, list[JSON]] = ctx.artifacts.get_json(key).get("medias") or {}
    return {sha: [VariantInfo(**v) for v in infos] for sha, infos in found.items()}
