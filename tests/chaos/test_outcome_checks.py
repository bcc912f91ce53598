"""The checks of the worker-kill test catch what they are there to catch (no servers: files and snapshots)."""

from __future__ import annotations

from pathlib import Path

import apsw
import numpy as np
import sqlite_vec

from pipeline.bundle_db.vectors import vector_blob
from pipeline.models import StageState, StageStatus
from pipeline.stores.artifacts import LocalArtifactStore
from tests.chaos.kill_moments import Snapshot, redone
from tests.chaos.outcomes import objects_with_two_contents, sqlite_duplicates, uploads_repeated


def content_db(path: Path, fts_rows: list[str], vec_rows: list[str]) -> Path:
    con = apsw.Connection(str(path))
    con.enable_load_extension(True)
    con.load_extension(sqlite_vec.loadable_path())
    con.execute("CREATE TABLE posts (_id TEXT PRIMARY KEY, _slug TEXT); "
                "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT); "
                "CREATE VIRTUAL TABLE posts_fts USING fts5(post_id UNINDEXED, title, plain); "
                "CREATE VIRTUAL TABLE post_vec USING vec0(post_id TEXT PRIMARY KEY, embedding float[2])")
    con.executemany("INSERT INTO posts VALUES (?, ?)", [("a", "a"), ("b", "b")])
    con.executemany("INSERT INTO tags (name) VALUES (?)", [("x",), ("y",)])
    con.executemany("INSERT INTO posts_fts VALUES (?, 't', 'p')", [(r,) for r in fts_rows])
    con.executemany("INSERT INTO post_vec VALUES (?, ?)",
                    [(r, vector_blob(np.ones(2, dtype=np.float32))) for r in vec_rows])
    con.close()
    return path


def test_sqlite_duplicates_finds_repeated_fts_rows_orphans_and_missing_vectors(tmp_path: Path) -> None:
    assert sqlite_duplicates(content_db(tmp_path / "ok.sqlite", ["a", "b"], ["a", "b"])) == []
    found = sqlite_duplicates(content_db(tmp_path / "bad.sqlite", ["a", "b", "b", "z"], ["a"]))
    assert any("posts_fts repeat a post_id" in p for p in found), found
    assert any("posts_fts belong to no row of posts" in p for p in found), found
    assert any("posts have no row in post_vec" in p for p in found), found


def test_tag_names_stored_twice_are_duplicates(tmp_path: Path) -> None:
    db = content_db(tmp_path / "tags.sqlite", ["a", "b"], ["a", "b"])
    con = apsw.Connection(str(db))
    con.execute("INSERT INTO tags (name) VALUES ('x')")
    con.close()
    assert sqlite_duplicates(db) == ["tags.sqlite: 1 tag name(s) stored twice"]


def test_an_object_key_holding_two_contents_is_found_and_pointers_are_not() -> None:
    versions = {"p/rev/a.json": ["h1", "h1"], "p/rev/b.json": ["h1", "h2"], "p/latest.json": ["h1", "h2"]}
    assert objects_with_two_contents(versions, frozenset({"p/latest.json"})) == \
        ["p/rev/b.json: 2 different contents in 2 uploads"]
    assert uploads_repeated(versions, frozenset({"p/latest.json"})) == 2


def stage(name: str, status: StageStatus, attempts: int = 1, **fields: object) -> StageState:
    return StageState(name=name, status=status, attempts=attempts, **fields)  # type: ignore[arg-type]


def test_redone_counts_rerun_batches_and_flags_a_done_stage_or_batch_run_again(tmp_path: Path) -> None:
    artifacts = LocalArtifactStore(tmp_path)
    for n in range(3):
        artifacts.put_json(f"jobs/j/embed_text/items/{n:05d}.json", {"items": [{"key": "k"}] * 4, "embedded": ["k"]})
    cursor = {"phase": "batches", "batches": 3, "dispatched": True}
    before = Snapshot({"parse": stage("parse", StageStatus.DONE),
                       "embed_text": stage("embed_text", StageStatus.QUEUED, cursor=cursor)},
                      runs={"embed_text": {0: 1, 1: 1}}, done={"embed_text": {0}})
    # batch 1 was in flight and ran again; batch 2 ran once, as it had to: one batch of 4 texts redone
    after = Snapshot({"parse": stage("parse", StageStatus.DONE),
                      "embed_text": stage("embed_text", StageStatus.DONE, attempts=2, cursor=cursor)},
                     runs={"embed_text": {0: 1, 1: 2, 2: 1}}, done={"embed_text": {0, 1, 2}})
    cost = redone(before, after, "embed_text:batch", True, artifacts, "j", {})
    assert (cost.items, cost.bound, cost.problems) == (4, 4, [])

    worse = Snapshot({"parse": stage("parse", StageStatus.DONE, attempts=2),
                      "embed_text": stage("embed_text", StageStatus.DONE, attempts=2, cursor=cursor)},
                     runs={"embed_text": {0: 2, 1: 2, 2: 1}}, done={"embed_text": {0, 1, 2}})
    cost = redone(before, worse, "embed_text:batch", True, artifacts, "j", {})
    assert cost.items == 8
    assert cost.problems == ["parse was done at the kill and ran again (1 → 2 attempts)",
                             "embed_text batch 0 was complete at the kill and ran again"]


def test_redone_reads_a_cursor_resumed_behind_its_checkpoint(tmp_path: Path) -> None:
    cursor = {"phase": "render", "next": 6, "total": 10, "batch": 2}
    before = Snapshot({"parse": stage("parse", StageStatus.RUNNING, cursor=cursor)})
    resumed = Snapshot({"parse": stage("parse", StageStatus.DONE, attempts=2, resumed_from=cursor)})
    cost = redone(before, resumed, "parse", True, LocalArtifactStore(tmp_path), "j", {"parse": 2})
    assert (cost.items, cost.bound, cost.problems) == (2, 2, [])  # the batch in flight, no more

    from_scratch = Snapshot({"parse": stage("parse", StageStatus.DONE, attempts=2,
                                            resumed_from={**cursor, "next": 2})})
    cost = redone(before, from_scratch, "parse", True, LocalArtifactStore(tmp_path), "j", {"parse": 2})
    assert cost.items == 6 and cost.items > cost.bound
    assert cost.problems == ["parse resumed at 2, behind its checkpoint 6 at the kill"]
