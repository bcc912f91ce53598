"""The vector half of content.sqlite: sqlite-vec `vec0` tables (cosine) for posts, passages and images.

Loaded through apsw, since Python's own sqlite3 here cannot load extensions. Query with:

    SELECT post_id, distance FROM post_vec WHERE embedding MATCH :query_vector AND k = 10
"""

from __future__ import annotations

from collections.abc import Sequence
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


def vector_blob(vec: Matrix) -> bytes:
    """The bytes sqlite-vec reads as a float[] vector: little-endian float32, whatever the input dtype."""
    return np.asarray(vec, dtype="<f4").tobytes()


def _vector_table(con: apsw.Connection, table: str, key: tuple[str, str], keys: Sequence[str | int], vecs: Matrix,
                  name: str, model: str | None) -> None:
    """A vec0 table of `vecs` under `keys` (column name, SQL type), and the model they came from."""
    column, sql_type = key
    dim = int(vecs.shape[1])
    con.execute(f"CREATE VIRTUAL TABLE {table} USING vec0({column} {sql_type} PRIMARY KEY, "
                f"embedding float[{dim}] distance_metric=cosine)")
    con.executemany(f"INSERT INTO {table}({column}, embedding) VALUES (?, ?)",
                    [(k, vector_blob(v)) for k, v in zip(keys, vecs, strict=True)])
    con.execute("INSERT INTO vector_models VALUES (?, ?, ?)", (name, model, dim))


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
            _vector_table(con, POST_VEC, ("post_id", "TEXT"), ids, vecs, "posts", model)
            counts["post_vectors"] = len(ids)
        if chunks is not None and len(chunks[0]):
            rows, vecs, plain = chunks
            con.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, post_id TEXT NOT NULL, idx INTEGER, "
                        "start INTEGER, end INTEGER, text TEXT)")
            con.execute("CREATE INDEX chunks_post ON chunks(post_id)")
            con.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)", [
                (n, r["post"], r["index"], r["start"], r["end"], plain.get(r["post"], "")[r["start"]:r["end"]])
                for n, r in enumerate(rows, start=1)])
            _vector_table(con, CHUNK_VEC, ("chunk_id", "INTEGER"), range(1, len(vecs) + 1), vecs, "chunks", model)
            counts["chunk_vectors"] = len(rows)
        if medias is not None and len(medias[0]):
            ids, vecs, media_model = medias
            _vector_table(con, MEDIA_VEC, ("media_id", "TEXT"), ids, vecs, "medias", media_model)
            counts["media_vectors"] = len(ids)
    con.execute("VACUUM")
    con.close()
    return counts
