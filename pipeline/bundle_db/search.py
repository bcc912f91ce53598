"""Hybrid search over a bundle's content.sqlite: FTS5 bm25 and vector k-NN, fused by reciprocal rank.

Reciprocal rank fusion (score = Σ 1/(60 + rank)) needs no score calibration between bm25 and
cosine distance, which live on unrelated scales; 60 is the constant of the original RRF paper.

`search` is the whole query path (the database of a bundle, the query embedder its vectors need, the
ranking), so the command line and an HTTP endpoint answer alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.bundle_db.schema import FTS_TABLE
from pipeline.bundle_db.vectors import CHUNK_VEC, MEDIA_VEC, POST_VEC, connect, vector_blob
from pipeline.embedders.image import load_clip
from pipeline.embedders.select import text_embedder
from pipeline.errors import PermanentError
from pipeline.settings import Settings

RRF_K = 60
Embed = Callable[[str], "np.typing.NDArray[np.float32]"]


@dataclass
class Hit:
    id: str
    title: str
    slug: str
    score: float
    snippet: str


def fts_query(text: str) -> str:
    """Free text → an FTS5 expression that cannot be a syntax error: each word quoted, OR-ed."""
    words = [w for w in re.findall(r"\w+", text, flags=re.UNICODE) if w]
    return " OR ".join(f'"{w}"' for w in words)


def models(db: Path) -> dict[str, tuple[str, int]]:
    con = connect(db, readonly=True)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "vector_models" not in tables:
            return {}
        return {str(n): (str(m), int(d)) for n, m, d in con.execute("SELECT name, model, dim FROM vector_models")}
    finally:
        con.close()


def image_vectors(db: Path) -> tuple[str, str | None]:
    """(model id, kind) of the image vectors of a bundle's content.sqlite.

    The kind ("clip": a CLIP image tower, searched with its text tower; "caption": the text model over
    captions, searched with the text model) is in the bundle's manifest.json beside the database; it is
    None when there is no manifest there or it describes other vectors.
    """
    stored = models(db).get("medias")
    if stored is None:
        raise PermanentError(f"{db} has no image vectors (built without embeddings, or without raster images)")
    model = stored[0]
    manifest = db.parent / "manifest.json"
    if not manifest.is_file():
        return model, None
    try:
        image = (json.loads(manifest.read_text(encoding="utf-8")).get("models") or {}).get("image") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise PermanentError(f"cannot read {manifest}: {exc}") from exc
    kind = image.get("kind") if isinstance(image, dict) and image.get("model") == model else None
    return model, str(kind) if kind else None


def search_posts(db: Path, query: str, k: int = 10, embed: Embed | None = None) -> list[Hit]:
    if not db.exists():
        raise PermanentError(f"{db} does not exist")
    con = connect(db, readonly=True)
    try:
        depth = max(k * 5, 50)
        ranks: dict[str, list[int]] = {}
        snippets: dict[str, str] = {}
        expr = fts_query(query)
        if expr:
            rows = con.execute(
                f"SELECT post_id, snippet({FTS_TABLE}, 2, '[', ']', ' … ', 12) FROM {FTS_TABLE} "
                f"WHERE {FTS_TABLE} MATCH ? ORDER BY bm25({FTS_TABLE}) LIMIT ?", (expr, depth))
            for rank, (pid, snip) in enumerate(rows, start=1):
                ranks.setdefault(str(pid), []).append(rank)
                snippets.setdefault(str(pid), str(snip))
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        if embed is not None and POST_VEC in tables:
            # The query goes in bare. MiniLM is not instruction-tuned: the original's instruction prefix,
            # kept on post vectors for compatibility, would make every post look alike to a query that
            # carried it too (all cosine distances ~0.25 on the demo), and passages carry no prefix at all.
            qv = vector_blob(embed(query))
            rows = con.execute(f"SELECT post_id FROM {POST_VEC} WHERE embedding MATCH ? AND k = ?", (qv, depth))
            for rank, (pid,) in enumerate(rows, start=1):
                ranks.setdefault(str(pid), []).append(rank)
            if CHUNK_VEC in tables:
                rows = con.execute(
                    f"SELECT c.post_id, c.text FROM {CHUNK_VEC} v JOIN chunks c ON c.id = v.chunk_id "
                    f"WHERE v.embedding MATCH ? AND k = ? ORDER BY v.distance", (qv, depth))
                seen: set[str] = set()
                rank = 0
                for pid, text in rows:
                    if str(pid) in seen:
                        continue  # a post counts once, at its best passage
                    seen.add(str(pid))
                    rank += 1
                    ranks.setdefault(str(pid), []).append(rank)
                    snippets.setdefault(str(pid), " ".join(str(text).split())[:200])
        scored = sorted(((sum(1.0 / (RRF_K + r) for r in rs), pid) for pid, rs in ranks.items()),
                        key=lambda t: (-t[0], t[1]))[:k]
        hits: list[Hit] = []
        for score, pid in scored:
            row = con.execute("SELECT _title, _slug, substr(_plain, 1, 200) FROM posts WHERE _id = ?",
                              (pid,)).fetchone()
            if row is None:
                continue
            title, slug, plain = row
            hits.append(Hit(pid, str(title), str(slug), round(score, 6),
                            snippets.get(pid) or " ".join(str(plain or "").split())))
        return hits
    finally:
        con.close()


def search_medias(db: Path, query_vector: np.typing.NDArray[np.float32], k: int = 10) -> list[Hit]:
    con = connect(db, readonly=True)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        if MEDIA_VEC not in tables:
            raise PermanentError(f"{db} has no image vectors")
        rows = con.execute(
            f"SELECT v.media_id, v.distance, m.path, m.file_name FROM {MEDIA_VEC} v LEFT JOIN medias m "
            f"ON m._id = v.media_id WHERE v.embedding MATCH ? AND k = ? ORDER BY v.distance",
            (vector_blob(query_vector), k))
        return [Hit(str(mid), str(name or mid), str(path or ""), round(1.0 - float(dist), 6), str(path or ""))
                for mid, dist, path, name in rows]
    finally:
        con.close()


@dataclass
class Results:
    hits: list[Hit]
    notice: str | None = None  # why vectors were left out of a posts search, for the user to see


def bundle_database(bundle: Path) -> Path:
    """The content.sqlite of a bundle folder, or the file itself."""
    db = bundle / "content.sqlite" if bundle.is_dir() else bundle
    if not db.is_file():
        raise PermanentError(f"{db} does not exist (give a bundle folder or its content.sqlite)")
    return db


def image_query_embedder(db: Path, settings: Settings) -> Embed:
    """How a query is embedded to search the images of `db`: with the model their vectors came from.

    CLIP vectors are searched with the CLIP text tower, caption vectors with the text model; the kind is
    read from the bundle's manifest, else found by matching the stored model id with the local models.
    """
    model, kind = image_vectors(db)
    if kind != "caption":
        clip = load_clip(settings.clip_model_dir)
        if clip is not None and clip.model_id == model:
            return lambda text: clip.embed_texts([text])[0]
        if kind == "clip":
            if clip is None:
                raise PermanentError(f"the images of {db} have CLIP vectors ({model}); searching them needs "
                                     "that CLIP model: set REPOBUILD_CLIP_MODEL_DIR")
            raise PermanentError(f"the images of {db} were embedded with the CLIP model {model}, "
                                 f"REPOBUILD_CLIP_MODEL_DIR holds {clip.model_id}")
    embedder = text_embedder(settings)
    if embedder.model_id == model:
        # Captions are embedded as they are, without the documents' instruction: so is the query.
        return lambda text: embedder.embed([text])[0]
    if kind == "caption":
        raise PermanentError(f"the image captions of {db} were embedded with {model}, "
                             f"this machine's text model is {embedder.model_id}")
    raise PermanentError(f"the image vectors of {db} come from {model}, which is neither this machine's text "
                         "model nor the configured CLIP model (REPOBUILD_CLIP_MODEL_DIR)")


def _post_query_embedder(db: Path, settings: Settings) -> tuple[Embed | None, str | None]:
    """The text model, when the posts of `db` have vectors from it; else None and why (keywords only)."""
    stored = models(db)
    if "posts" not in stored and "chunks" not in stored:
        return None, None
    embedder = text_embedder(settings)
    text_model = (stored.get("posts") or stored.get("chunks") or ("", 0))[0]
    if text_model and text_model != embedder.model_id:
        return None, (f"{db} was embedded with {text_model}, this machine has {embedder.model_id}; "
                      "searching by keywords only")
    return lambda text: embedder.embed([text])[0], None


def search(bundle: Path, query: str, k: int, images: bool, settings: Settings) -> Results:
    """The `k` best posts (or images) of a bundle folder or content.sqlite for a free-text query.

    Raises PermanentError, with a message a user can act on, when the bundle or the model its vectors
    need is missing.
    """
    db = bundle_database(bundle)
    if images:
        return Results(search_medias(db, image_query_embedder(db, settings)(query), k))
    embed, notice = _post_query_embedder(db, settings)
    return Results(search_posts(db, query, k, embed), notice)
