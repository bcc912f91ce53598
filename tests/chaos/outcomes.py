"""What a faulted job left behind, checked from its outcomes: the rows of content.sqlite, every version of
every object in the bucket, and the revision folders written on disk.

Each check returns the problems it found, one string naming the item each, so a test can count them
(duplicate rows, objects that held two contents) and print them.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import apsw
import sqlite_vec

from benchmarks.bundle_diff import diff

# (vector table, its key column, the table whose rows it must match one to one, that table's key)
VECTOR_TABLES = (("post_vec", "post_id", "posts", "_id"), ("chunk_vec", "chunk_id", "chunks", "id"),
                 ("media_vec", "media_id", "medias", "_id"))
FTS_TABLE = "posts_fts"


def _connect(db: Path) -> apsw.Connection:
    con = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    con.enable_load_extension(True)
    con.load_extension(sqlite_vec.loadable_path())
    return con


def _tables(con: apsw.Connection) -> dict[str, str]:
    """Every table a reader queries, by name → its CREATE statement (shadow tables of FTS5 and vec0 aside)."""
    rows = list(con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"))
    virtual = [str(n) for n, sql in rows if str(sql or "").upper().startswith("CREATE VIRTUAL")]
    return {str(n): str(sql or "") for n, sql in rows
            if not any(str(n).startswith(f"{v}_") for v in virtual) and not str(n).startswith("sqlite_")}


def _primary_key(con: apsw.Connection, table: str) -> list[str]:
    info = list(con.execute(f'PRAGMA table_info("{table}")'))
    return [str(r[1]) for r in sorted((r for r in info if r[5]), key=lambda r: int(r[5]))]


def _count(con: apsw.Connection, sql: str) -> int:
    return int(next(iter(con.execute(sql)))[0])


def sqlite_duplicates(db: Path) -> list[str]:
    """Duplicate rows anywhere in content.sqlite: a key twice, the same row twice, a full-text or vector row
    with no post (or chunk, or media) of its own, or a post with two of them."""
    con = _connect(db)
    problems: list[str] = []
    try:
        tables = _tables(con)
        for table, sql in tables.items():
            if sql.upper().startswith("CREATE VIRTUAL"):
                continue
            cols = [f'"{c}"' for c in _primary_key(con, table)] or ["*"]
            group = ", ".join(cols)
            dup_keys = _count(con, f'SELECT COUNT(*) FROM (SELECT {group} FROM "{table}" GROUP BY {group} '
                                   f"HAVING COUNT(*) > 1)")
            if dup_keys:
                problems.append(f"{db.name}: {dup_keys} key(s) of {table} ({group}) held by more than one row")
            if cols != ["*"]:
                dup_rows = _count(con, f'SELECT COUNT(*) - (SELECT COUNT(*) FROM (SELECT DISTINCT * FROM "{table}")) '
                                       f'FROM "{table}"')
                if dup_rows:
                    problems.append(f"{db.name}: {dup_rows} row(s) of {table} repeated whole")
        if "tags" in tables:
            dup_names = _count(con, "SELECT COUNT(*) FROM (SELECT name FROM tags GROUP BY name HAVING COUNT(*) > 1)")
            if dup_names:
                problems.append(f"{db.name}: {dup_names} tag name(s) stored twice")
        if FTS_TABLE in tables:
            problems += _one_to_one(con, FTS_TABLE, "post_id", "posts", "_id", db.name)
        for vec, key, base, base_key in VECTOR_TABLES:
            if vec in tables:
                problems += _one_to_one(con, vec, key, base, base_key, db.name)
    finally:
        con.close()
    return problems


def _one_to_one(con: apsw.Connection, table: str, key: str, base: str, base_key: str, name: str) -> list[str]:
    """`table` holds exactly one row per row of `base`, matched on key = base_key."""
    keys = [r[0] for r in con.execute(f'SELECT "{key}" FROM "{table}"')]
    base_keys = {r[0] for r in con.execute(f'SELECT "{base_key}" FROM "{base}"')}
    problems = []
    extra = len(keys) - len(set(keys))
    if extra:
        problems.append(f"{name}: {extra} row(s) of {table} repeat a {key}")
    orphans = set(keys) - base_keys
    if orphans:
        problems.append(f"{name}: {len(orphans)} row(s) of {table} belong to no row of {base}: {sorted(orphans)[:3]}")
    # media vectors exist only for rasters, so only posts and chunks must each have theirs
    missing = base_keys - set(keys) if table != "media_vec" else set()
    if missing:
        problems.append(f"{name}: {len(missing)} row(s) of {base} have no row in {table}")
    return problems


def enable_versioning(s3: Any, bucket: str) -> None:
    """A bucket that keeps every content each key ever held, so an overwrite is seen however quick."""
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def object_versions(s3: Any, bucket: str, prefix: str) -> dict[str, list[str]]:
    """Every version of every key under `prefix`, as the SHA-256 of its content, oldest first."""
    found: dict[str, list[tuple[Any, str]]] = defaultdict(list)
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for v in page.get("Versions", []):
            body = s3.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
            found[v["Key"]].append((v["LastModified"], hashlib.sha256(body).hexdigest()))
    return {k: [h for _t, h in sorted(vs, key=lambda tv: tv[0])] for k, vs in found.items()}


def objects_with_two_contents(versions: dict[str, list[str]], pointers: frozenset[str] = frozenset()) -> list[str]:
    """Keys that held more than one content. `pointers` (a project's latest.json) move on purpose."""
    return [f"{key}: {len(set(hashes))} different contents in {len(hashes)} uploads"
            for key, hashes in sorted(versions.items()) if key not in pointers and len(set(hashes)) > 1]


def uploads_repeated(versions: dict[str, list[str]], pointers: frozenset[str] = frozenset()) -> int:
    """Uploads of a content a key already held: work a resumed upload did again."""
    return sum(len(hashes) - 1 for key, hashes in versions.items() if key not in pointers)


def download_revision(s3: Any, bucket: str, project_prefix: str, rev: str, dest: Path) -> Path:
    """A revision's objects as the bundle folder they came from: `{rev}/<path>` and `_shared/medias/<f>` →
    `_medias/<f>` (the shared copies of `_posts/hash/` are the revision's own, compared there)."""
    root = dest / rev
    for prefix, into in ((f"{project_prefix}/{rev}/", ""), (f"{project_prefix}/_shared/medias/", "_medias/")):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                path = root / (into + obj["Key"][len(prefix):])
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    return root


class RevisionSnapshots:
    """Copies of a local revision folder as it stood at each kill, to compare with what it finally holds."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.taken: list[Path] = []

    def take(self, revision: Path) -> None:
        if revision.is_dir():
            # named after the revision: bundle_diff replaces a folder's name (the revision) in its strings
            copy = self.root / f"{len(self.taken):03d}" / revision.name
            shutil.copytree(revision, copy, symlinks=True)
            self.taken.append(copy)

    def rewritten_differently(self, final: Path, ignore: frozenset[str] = frozenset()) -> list[str]:
        return [f"{final.name} at kill {n}: {p}" for n, snap in enumerate(self.taken)
                for p in diff(snap, final, ignore)]
