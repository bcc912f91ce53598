"""The vector half of content.sqlite: sqlite-vec `vec0` tables (cosine) for posts, passages and images.

Loaded through apsw, since Python's own sqlite3 here cannot load extensions. Query with:

    SELECT post_id, distance FROM post_vec WHERE embedding MATCH :query_vector AND k = 10
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw
import numpy as np
import sqlite_vec

from pipeline.stores.vectors import Matrix

POST_VEC, CHUNK_VEC, MEDIA_VEC = "post_vec", "chunk_vec", "media_vec"


def connect(path: Path | str, readonly: bool = False) -> apsw.Connection:
    flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    con = apsw.Connection(str(path), flags=flags)
    con.enable_load_extension(True)
    con.load_extension(sqlite_vec.loadable_path())
    con.enable_load_extension(False)
    return con


def _blob(vec: Matrix) -> bytes:
    return np.asarray(vec, dtype="<f4").tobytes()


def add_vectors(path: Path, *, model: str | None, posts: tuple[list[str], Matrix] | None,
                chunks: tuple[list[dict[str, Any]], Matrix, dict[str, str]] | None,
                medias: tuple[list[str], Matrix, str] | None) -> dict[str, int]:
    """Add vector tables to an existing content.sqlite. `chunks` = (rows, vectors, plain text by post)."""
    con = connect(path)
    counts = {"post_vectors": 0, "chunk_vectors": 0, "media_vectors": 0}
    with con:
        con.execute("CREATE TABLE vector_models (name TEXT PRIMARY KEY, model TEXT, dim INTEGER)")
        if posts is not None and len(posts[0]):
            ids, vecs = posts
            con.execute(f"CREATE VIRTUAL TABLE {POST_VEC} USING vec0(post_id TEXT PRIMARY KEY, "
                        f"embedding float[{vecs.shape[1]}] distance_metric=cosine)")
            con.executemany(f"INSERT INTO {POST_VEC}(post_id, embedding) VALUES (?, ?)",
                            [(i, _blob(v)) for i, v in zip(ids, vecs, strict=True)])
            con.execute("INSERT INTO vector_models VALUES ('posts', ?, ?)", (model, int(vecs.shape[1])))
            counts["post_vectors"] = len(ids)
        if chunks is not None and len(chunks[0]):
            rows, vecs, plain = chunks
            con.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, post_id TEXT NOT NULL, idx INTEGER, "
                        "start INTEGER, end INTEGER, text TEXT)")
            con.execute("CREATE INDEX chunks_post ON chunks(post_id)")
            con.execute(f"CREATE VIRTUAL TABLE {CHUNK_VEC} USING vec0(chunk_id INTEGER PRIMARY KEY, "
                        f"embedding float[{vecs.shape[1]}] distance_metric=cosine)")
            con.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)", [
                (n, r["post"], r["index"], r["start"], r["end"], plain.get(r["post"], "")[r["start"]:r["end"]])
                for n, r in enumerate(rows, start=1)])
            con.executemany(f"INSERT INTO {CHUNK_VEC}(chunk_id, embedding) VALUES (?, ?)",
                            [(n, _blob(v)) for n, v in enumerate(vecs, start=1)])
            con.execute("INSERT INTO vector_models VALUES ('chunks', ?, ?)", (model, int(vecs.shape[1])))
            counts["chunk_vectors"] = len(rows)
        if medias is not None and len(medias[0]):
            ids, vecs, media_model = medias
            con.execute(f"CREATE VIRTUAL TABLE {MEDIA_VEC} USING vec0(media_id TEXT PRIMARY KEY, "
                        f"embedding float[{vecs.shape[1]}] distance_metric=cosine)")
            con.executemany(f"INSERT INTO {MEDIA_VEC}(media_id, embedding) VALUES (?, ?)",
                            [(i, _blob(v)) for i, v in zip(ids, vecs, strict=True)])
            con.execute("INSERT INTO vector_models VALUES ('medias', ?, ?)", (media_model, int(vecs.shape[1])))
            counts["media_vectors"] = len(ids)
    con.execute("VACUUM")
    con.close()
    return counts
