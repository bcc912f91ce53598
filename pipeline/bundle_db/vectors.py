"""The vector half of content.sqlite: sqlite-vec `vec0` tables (cosine) for posts, passages and images.

Loaded through apsw, since Python's own sqlite3 here cannot load extensions. Query with:

    SELECT post_id, distance FROM post_vec WHERE embedding MATCH :query_vector AND k = 10
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import numpy as np
import sqlite_vec

from pipeline.stores.vectors import Matrix

POST_VEC, CHUNK_VEC, MEDIA_VEC = "post_vec", "chunk_vec", "media_vec"
CHUNK_ROWS = 512  # passages inserted at once, their text cut from one post's plain text at a time


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


def _vector_table(con: apsw.Connection, table: str, key: tuple[str, str], keys: Iterable[str | int],
                  blocks: Iterable[Matrix], dim: int, name: str, model: str | None) -> None:
    """A vec0 table of the vectors in `blocks` under `keys` (column name, SQL type), and the model they came from;
    a block at a time."""
    column, sql_type = key
    con.execute(f"CREATE VIRTUAL TABLE {table} USING vec0({column} {sql_type} PRIMARY KEY, "
                f"embedding float[{dim}] distance_metric=cosine)")
    ids = list(keys)
    done = 0
    for block in blocks:
        con.executemany(f"INSERT INTO {table}({column}, embedding) VALUES (?, ?)",
                        [(k, vector_blob(v)) for k, v in zip(ids[done:done + len(block)], block, strict=True)])
        done += len(block)
    if done != len(ids):
        raise ValueError(f"{table}: {done} vectors for {len(ids)} keys")
    con.execute("INSERT INTO vector_models VALUES (?, ?, ?)", (name, model, dim))


@dataclass(frozen=True)
class Vectors:
    """A matrix to add: its row keys (post hashes, chunk rows, media hashes), its blocks of rows, its width."""

    ids: Sequence[Any]
    blocks: Iterable[Matrix]
    dim: int
    model: str | None = None


def add_vectors(path: Path, *, model: str | None, posts: Vectors | None, chunks: Vectors | None,
                medias: Vectors | None) -> dict[str, int]:
    """Add vector tables to an existing content.sqlite. `chunks.ids` are the passages' rows (post, index, start,
    end); each passage's text is cut from its post's `_plain`, read back from the database a post at a time."""
    con = connect(path)
    counts = {"post_vectors": 0, "chunk_vectors": 0, "media_vectors": 0}
    with con:
        con.execute("CREATE TABLE vector_models (name TEXT PRIMARY KEY, model TEXT, dim INTEGER)")
        if posts is not None and len(posts.ids):
            _vector_table(con, POST_VEC, ("post_id", "TEXT"), posts.ids, posts.blocks, posts.dim, "posts", model)
            counts["post_vectors"] = len(posts.ids)
        if chunks is not None and len(chunks.ids):
            con.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, post_id TEXT NOT NULL, idx INTEGER, "
                        "start INTEGER, end INTEGER, text TEXT)")
            con.execute("CREATE INDEX chunks_post ON chunks(post_id)")
            plain = _PlainText(con)
            for at in range(0, len(chunks.ids), CHUNK_ROWS):
                con.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)", [
                    (n, r["post"], r["index"], r["start"], r["end"], plain.of(str(r["post"]))[r["start"]:r["end"]])
                    for n, r in enumerate(chunks.ids[at:at + CHUNK_ROWS], start=at + 1)])
            _vector_table(con, CHUNK_VEC, ("chunk_id", "INTEGER"), range(1, len(chunks.ids) + 1), chunks.blocks,
                          chunks.dim, "chunks", model)
            counts["chunk_vectors"] = len(chunks.ids)
        if medias is not None and len(medias.ids):
            _vector_table(con, MEDIA_VEC, ("media_id", "TEXT"), medias.ids, medias.blocks, medias.dim, "medias",
                          medias.model)
            counts["media_vectors"] = len(medias.ids)
    con.execute("VACUUM")
    con.close()
    return counts


class _PlainText:
    """A post's plain text from the posts table, the last one kept: passages come in post order."""

    def __init__(self, con: apsw.Connection) -> None:
        self.con = con
        self.post: str | None = None
        self.text = ""

    def of(self, post: str) -> str:
        if post != self.post:
            row = self.con.execute("SELECT _plain FROM posts WHERE _id = ?", (post,)).fetchone()
            self.post, self.text = post, str(row[0] or "") if row else ""
        return self.text
