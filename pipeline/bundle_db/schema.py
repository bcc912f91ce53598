"""content.sqlite: the schema and the one function that writes it.

Everything here is deterministic: the same posts, medias and graph give a byte-identical file
(rows in a fixed order, ids assigned from sorted values, no timestamps of our own), so two runs
of a job publish the same bundle.

Full-text search is the FTS5 table `posts_fts(post_id UNINDEXED, title, plain)`. It keeps its own
copy of the text instead of pointing at `posts` (external content) because an external-content
index is keyed by the posts' implicit rowids, which a consumer's VACUUM may renumber; the join
column `post_id` (= posts._id) cannot drift. Query it with:

    SELECT p._id, p._slug, p._title FROM posts_fts JOIN posts p ON p._id = posts_fts.post_id
    WHERE posts_fts MATCH ? ORDER BY bm25(posts_fts)
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

SCHEMA_VERSION = 1
FTS_TABLE = "posts_fts"
# SQLite refuses tables wider than 2000 columns; a repository with thousands of distinct frontmatter
# keys keeps the most used ones as columns and the rest only in the JSON columns.
MAX_FRONTMATTER_COLUMNS = 1000
# The original indexed these when present; clients filter on them.
INDEXED_FRONTMATTER = ("draft", "published", "date", "author", "category", "status")

BASE_POST_COLUMNS: tuple[tuple[str, str], ...] = (
    ("_id", "TEXT PRIMARY KEY"),
    ("_slug", "TEXT NOT NULL"),
    ("_title", "TEXT"),
    ("_content", "TEXT"),
    ("_plain", "TEXT"),
    ("_backlinks", "TEXT"),
    ("_wordCount", "INTEGER"),
    ("_created", "TEXT"),
    ("_modified", "TEXT"),
    ("_path", "TEXT"),
    ("_type", "TEXT"),
    ("_frontmatter", "TEXT"),
    ("_frontmatter_normalized", "TEXT"),
)
# Column names are case-insensitive in SQLite, and rowid aliases would shadow the real rowid.
_RESERVED = {name.lower() for name, _ in BASE_POST_COLUMNS} | {"rowid", "oid", "_rowid_"}

_SCHEMA = f"""
CREATE TABLE medias (_id TEXT PRIMARY KEY, path TEXT, file_name TEXT, ext TEXT, mime_type TEXT,
                     width INTEGER, height INTEGER, size INTEGER);
CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE post_tags (post_id TEXT NOT NULL, tag_id INTEGER NOT NULL, PRIMARY KEY (post_id, tag_id)) WITHOUT ROWID;
CREATE TABLE links (source_id TEXT NOT NULL, target_id TEXT NOT NULL, PRIMARY KEY (source_id, target_id)) WITHOUT ROWID;
CREATE TABLE post_media (post_id TEXT NOT NULL, media_id TEXT NOT NULL, PRIMARY KEY (post_id, media_id)) WITHOUT ROWID;
-- porter: a search for "deploy" finds "Deploying"; it strips English suffixes only, other words pass as is
CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(post_id UNINDEXED, title, plain,
                                             tokenize = 'porter unicode61 remove_diacritics 2');
CREATE INDEX idx_posts_slug ON posts(_slug);
CREATE INDEX idx_posts_path ON posts(_path);
CREATE INDEX idx_post_tags_tag ON post_tags(tag_id, post_id);
CREATE INDEX idx_links_target ON links(target_id, source_id);
CREATE INDEX idx_post_media_media ON post_media(media_id, post_id);
"""


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def sanitize_key(key: str) -> str:
    """The original's rule: lowercased, anything outside [a-z0-9_] becomes `_`."""
    return re.sub(r"[^a-z0-9_]", "_", key.lower())


@dataclass(frozen=True)
class FrontmatterColumns:
    """How frontmatter keys land in `posts`: key → normalised name, and the typed columns."""

    names: dict[str, str]  # original key → column name (also the key in _frontmatter_normalized)
    types: dict[str, str]  # column name → INTEGER | REAL | TEXT, only for keys that got a column
    dropped: list[str] = field(default_factory=list)  # names beyond MAX_FRONTMATTER_COLUMNS


def _column_type(values: Sequence[Any]) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "INTEGER"
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "REAL"
    return "TEXT"


def plan_columns(frontmatters: Iterable[dict[str, Any]], limit: int = MAX_FRONTMATTER_COLUMNS) -> FrontmatterColumns:
    frontmatters = list(frontmatters)
    keys = sorted({k for fm in frontmatters for k in fm}, key=lambda k: (sanitize_key(k), k))
    names: dict[str, str] = {}
    taken: dict[str, str] = {}  # column name → the sanitised base that owns it
    for key in keys:
        base = sanitize_key(key)
        name = wanted = base if base and base not in _RESERVED and not base[0].isdigit() else f"fm_{base}"
        suffix = 2
        while taken.get(name, base) != base:  # "fm_x" written out vs "x" prefixed: keep both apart
            name, suffix = f"{wanted}_{suffix}", suffix + 1
        taken[name] = base
        names[key] = name  # keys that differ only in case or punctuation share one column
    values: dict[str, list[Any]] = {n: [] for n in taken}
    used: Counter[str] = Counter()
    for fm in frontmatters:
        for name in {names[k] for k in fm}:
            used[name] += 1
        for key, value in fm.items():
            if value is not None:
                values[names[key]].append(value)
    ranked = sorted(taken, key=lambda n: (-used[n], n))
    kept, dropped = sorted(ranked[:limit]), sorted(ranked[limit:])
    return FrontmatterColumns(names, {n: _column_type(values[n]) for n in kept}, dropped)


def _exhaust(cursor: apsw.Cursor) -> None:
    # apsw runs a multi-statement string lazily, stopping at the first statement that yields rows.
    for _ in cursor:
        pass


def _sql_value(value: Any, sql_type: str) -> Any:
    if value is None:
        return None
    if sql_type == "INTEGER":
        return int(value)
    if sql_type == "REAL":
        return float(value)
    return value if isinstance(value, str) else _dumps(value)


def _tags_of(post: dict[str, Any]) -> list[str]:
    raw = post.get("tags")
    if raw is None:
        raw = (post.get("frontmatter") or {}).get("tags")
    items = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    return [t for t in (str(x).strip() for x in items if x is not None) if t]


def _link_targets(post: dict[str, Any]) -> list[str]:
    out = []
    for link in post.get("links") or []:
        target = link if isinstance(link, str) else (link or {}).get("target") or (link or {}).get("hash")
        if isinstance(target, str) and target:
            out.append(target)
    return out


@dataclass(frozen=True)
class DbCounts:
    posts: int
    medias: int
    tags: int
    links: int
    post_media: int
    frontmatter_columns: int
    dropped_columns: list[str]


Posts = list[dict[str, Any]] | Callable[[], Iterable[dict[str, Any]]]


def _order(post: dict[str, Any]) -> tuple[str, str]:
    return str(post.get("originalFilePath") or ""), str(post["hash"])


@dataclass
class _Heads:
    """What each post's row needs to know about the others (ids, links, tags, frontmatter keys), without the text."""

    ids: set[str] = field(default_factory=set)
    targets: list[tuple[str, list[str]]] = field(default_factory=list)
    tags: list[tuple[str, list[str]]] = field(default_factory=list)
    frontmatters: list[dict[str, Any]] = field(default_factory=list)
    in_order: bool = True


def _heads(posts: Iterable[dict[str, Any]]) -> _Heads:
    heads, last = _Heads(), ("", "")
    for post in posts:
        pid = str(post["hash"])
        heads.ids.add(pid)
        heads.targets.append((pid, _link_targets(post)))
        heads.tags.append((pid, _tags_of(post)))
        heads.frontmatters.append(post.get("frontmatter") or {})
        heads.in_order = heads.in_order and _order(post) >= last
        last = _order(post)
    return heads


ROWS_AT_ONCE = 25  # posts inserted per executemany: a few posts' rows in memory, never the corpus's


def write_content_db(path: Path, posts: Posts, medias: list[dict[str, Any]],
                     graph: dict[str, Any] | None) -> DbCounts:
    """Write a fresh content.sqlite at `path` (which must not exist yet).

    `posts` is a list, or a function giving the posts afresh on each call (read twice: once for what rows refer
    to, once to insert them), so a streamed corpus never has to be whole in memory. Posts are inserted in
    (path, hash) order; a stream out of that order is read whole and sorted.
    """
    source: Callable[[], Iterable[dict[str, Any]]] = posts if callable(posts) else (lambda: posts)
    heads = _heads(source())
    if not heads.in_order:
        ordered = sorted(source(), key=_order)
        source = lambda: ordered  # noqa: E731
        heads = _heads(ordered)
    post_ids = heads.ids
    medias = sorted(medias, key=lambda m: (str(m.get("originalPath") or ""), str(m.get("hash") or "")))
    cols = plan_columns(heads.frontmatters)

    links = sorted({(pid, t) for pid, targets in heads.targets for t in targets if t in post_ids})
    backlinks: dict[str, list[str]] = {}
    for source_id, target in links:
        if source_id != target:  # a post citing itself is not a backlink
            backlinks.setdefault(target, []).append(source_id)
    tag_names = sorted({t for _pid, tags in heads.tags for t in tags})
    tag_ids = {name: i for i, name in enumerate(tag_names, start=1)}
    post_tags = sorted({(pid, tag_ids[t]) for pid, tags in heads.tags for t in tags})
    post_media = _post_media(graph, post_ids, medias)
    count = len(heads.frontmatters)
    del heads

    con = apsw.Connection(str(path))
    try:
        # A scratch file until it is published: a crash throws it away, so no journal is needed.
        _exhaust(con.execute("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA page_size = 4096;"))
        con.execute("BEGIN")
        fm_cols = list(cols.types.items())
        defs = [f"{_q(n)} {t}" for n, t in BASE_POST_COLUMNS] + [f"{_q(n)} {t}" for n, t in fm_cols]
        con.execute(f"CREATE TABLE posts ({', '.join(defs)});" + _SCHEMA)
        for name in INDEXED_FRONTMATTER:
            if name in cols.types:
                con.execute(f"CREATE INDEX {_q('idx_posts_fm_' + name)} ON posts({_q(name)})")
        names = [n for n, _ in BASE_POST_COLUMNS] + [n for n, _ in fm_cols]
        insert = (f"INSERT INTO posts (rowid, {', '.join(_q(n) for n in names)}) "
                  f"VALUES (?, {', '.join('?' for _ in names)})")
        rows: list[tuple[Any, ...]] = []
        fts_rows: list[tuple[Any, ...]] = []

        def flush() -> None:
            con.executemany(insert, rows)
            con.executemany(f"INSERT INTO {FTS_TABLE} (rowid, post_id, title, plain) VALUES (?, ?, ?, ?)", fts_rows)
            rows.clear()
            fts_rows.clear()

        for rowid, post in enumerate(source(), start=1):
            pid = str(post["hash"])
            fm: dict[str, Any] = post.get("frontmatter") or {}
            normalized: dict[str, Any] = {}
            for key, value in fm.items():
                normalized.setdefault(cols.names[key], value)
            rows.append((
                rowid, pid, post.get("slug") or pid, post.get("title"), post.get("html"), post.get("plain"),
                _dumps(backlinks.get(pid, [])), int(post.get("wordCount") or 0),
                post.get("gitCreated") or post.get("fsCreated"), post.get("gitModified") or post.get("fsModified"),
                post.get("originalFilePath"), "section" if post.get("isSection") else "post",
                _dumps(fm), _dumps(normalized),
                *(_sql_value(normalized.get(n), t) for n, t in fm_cols),
            ))
            fts_rows.append((rowid, pid, post.get("title") or "", post.get("plain") or ""))
            if len(rows) >= ROWS_AT_ONCE:
                flush()
        flush()
        con.executemany(
            "INSERT OR IGNORE INTO medias VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(str(m["hash"]), m.get("originalPath"), m.get("fileName"), m.get("fileExt"), m.get("mimeType"),
              (m.get("metadata") or {}).get("width"), (m.get("metadata") or {}).get("height"),
              (m.get("metadata") or {}).get("size")) for m in medias if m.get("hash")])
        con.executemany("INSERT INTO tags (id, name) VALUES (?, ?)", [(i, n) for n, i in tag_ids.items()])
        con.executemany("INSERT INTO post_tags VALUES (?, ?)", post_tags)
        con.executemany("INSERT INTO links VALUES (?, ?)", links)
        con.executemany("INSERT INTO post_media VALUES (?, ?)", post_media)
        # One merged b-tree instead of one segment per batch of inserts: smaller and faster to query.
        con.execute(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}) VALUES ('optimize')")
        con.execute("COMMIT")
        con.execute("VACUUM")
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    finally:
        con.close()
    return DbCounts(count, len({m["hash"] for m in medias if m.get("hash")}), len(tag_ids), len(links),
                    len(post_media), len(cols.types), cols.dropped)


def _post_media(graph: dict[str, Any] | None, post_ids: set[str],
                medias: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """POST_USE_IMAGE edges, with media given by hash or by any of the paths parse knows them by."""
    by_ref: dict[str, str] = {}
    for m in medias:
        if m.get("hash"):
            for ref in (m.get("hash"), m.get("hashPath"), m.get("originalPath"), m.get("effectivePath")):
                if isinstance(ref, str) and ref:
                    by_ref.setdefault(ref, str(m["hash"]))
    pairs = set()
    for edge in (graph or {}).get("edges") or []:
        if edge.get("type") == "POST_USE_IMAGE" and edge.get("source") in post_ids:
            media = by_ref.get(str(edge.get("target")))
            if media:
                pairs.add((str(edge["source"]), media))
    return sorted(pairs)
