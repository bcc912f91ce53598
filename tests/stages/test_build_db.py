"""Pure tier: build_db on small hand-made parse outputs, checked by opening content.sqlite with apsw."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import apsw
import pytest

from pipeline.bundle_db.schema import FTS_TABLE, SCHEMA_VERSION, plan_columns, sanitize_key
from pipeline.errors import PermanentError
from pipeline.models import JobSpec
from pipeline.settings import Settings
from pipeline.stages import build_db
from pipeline.stages.context import LocalContext
from pipeline.stores.artifacts import LocalArtifactStore

CAT = b"\x89PNG\r\n\x1a\n fake cat bytes"
DOG = b"\xff\xd8\xff\xe0 fake dog bytes"


def sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


H_HELLO, H_PRIVET, H_NOTES = sha("hello"), sha("privet"), sha("notes")
M_CAT, M_DOG = sha(CAT), sha(DOG)


def sample_inputs() -> dict[str, Any]:
    """A tiny repository as the parse stage describes it: three posts, two media files, a graph."""
    def post(file: str, slug: str, title: str, fm: dict[str, Any], plain: str, h: str, links: list[str],
             tags: list[str]) -> dict[str, Any]:
        return {"fileName": Path(file).stem, "slug": slug, "title": title, "frontmatter": fm,
                "firstParagraphText": plain[:40], "plain": plain, "wordCount": len(plain.split()),
                "html": f"<p>{plain}</p>", "toc": [], "originalFilePath": file,
                "folder": str(Path(file).parent).replace(".", ""), "url": f"/_repo/notes/{slug}", "hash": h,
                "links": links, "fsCreated": "2024-01-01T00:00:00.000Z", "fsModified": "2024-02-01T00:00:00.000Z",
                "_slugInfo": {"desiredSlug": slug, "disambiguatedSlug": slug, "finalSlug": slug,
                              "isDisambiguated": False},
                "tags": tags, **({"date": fm["date"]} if "date" in fm else {})}

    posts = [
        post("hello.md", "hello", "Hello World",
             {"title": "Hello World", "Cover Image": "img/cat.png", "draft": True, "rating": 4.5,
              "tags": ["python", "sqlite"], "colophon": "Set in Garamond", "2021 notes": "old", "order": 3,
              "date": "2024-01-02T00:00:00.000Z"},
             "Hello world, this is about café culture and full-text search.", H_HELLO, [H_PRIVET],
             ["python", "sqlite"]),
        post("ru/privet.md", "privet", "Привет",
             {"title": "Привет", "draft": False, "rating": 2, "tags": ["python"], "authors": {"name": "Иван"}},
             "Съешь же ещё этих мягких французских булок, да выпей чаю.", H_PRIVET, [H_HELLO], ["python"]),
        post("notes/index.md", "notes", "notes", {}, "Notes linking back home.", H_NOTES,
             [H_HELLO, "no-such-post"], []),
    ]
    posts[0]["firstImage"] = f"/_repo/medias/{M_CAT}.png"

    def media(path: str, data: bytes, h: str, mime: str, ext: str) -> dict[str, Any]:
        return {"originalPath": path, "fileName": Path(path).name, "fileExt": ext, "mimeType": mime,
                "effectivePath": path, "hashPath": f"{h}.{ext}", "sizes": {},
                "metadata": {"format": ext, "hash": h, "width": 640, "height": 480, "size": len(data)}, "hash": h}

    medias = [media("img/cat.png", CAT, M_CAT, "image/png", "png"),
              media("img/dog.jpg", DOG, M_DOG, "image/jpeg", "jpg")]
    graph = {"nodes": [{"id": p["hash"], "type": "post", "label": p["title"]} for p in posts]
             + [{"id": m["hash"], "type": "media", "label": m["fileName"]} for m in medias],
             "edges": [{"source": H_HELLO, "target": H_PRIVET, "type": "POST_LINKS_TO_POST"},
                       {"source": H_PRIVET, "target": H_HELLO, "type": "POST_LINKS_TO_POST"},
                       {"source": H_NOTES, "target": H_HELLO, "type": "POST_LINKS_TO_POST"},
                       {"source": H_HELLO, "target": M_CAT, "type": "POST_USE_IMAGE"},
                       {"source": H_PRIVET, "target": "img/dog.jpg", "type": "POST_USE_IMAGE"}]}
    files_source = [{"path": p, "filename": Path(p).name, "extension": Path(p).suffix[1:], "size": 10,
                     "folder": p.split("/")[:-1]} for p in ("hello.md", "ru/privet.md", "notes/index.md",
                                                            "img/cat.png", "img/dog.jpg")]
    issues = {"issues": [{"severity": "warning", "filePath": "notes/index.md", "message": "broken link"}],
              "summary": {"totalIssues": 1, "errorCount": 0, "warningCount": 1, "infoCount": 0}}
    return {"posts.json": posts, "medias.json": medias, "graph.json": graph, "files-source.json": files_source,
            "processor-issues.json": issues, "meta.json": {"root": "", "posts": 3, "medias": 2}}


def write_job_inputs(store: LocalArtifactStore, job_id: str, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """What fetch and parse leave behind for `job_id`: the tree, source.json and the parse results."""
    inputs = inputs or sample_inputs()
    for name, value in inputs.items():
        store.put_json(f"jobs/{job_id}/parse/result/{name}", value)
    with store.write_tree(f"jobs/{job_id}/fetch/tree") as tree:
        for rel, data in {"img/cat.png": CAT, "img/dog.jpg": DOG, "hello.md": b"# Hello"}.items():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / rel).write_bytes(data)
    store.put_json(f"jobs/{job_id}/fetch/source.json",
                   {"kind": "git", "url": "https://user:tok@example.org/r.git", "path": None, "branch": "main",
                    "commit": "abc123", "files": 5, "bytes": 100})
    return inputs


def make_ctx(tmp_path: Path, job_id: str = "job-1", stage: str = "build_db", **spec: Any) -> LocalContext:
    settings = Settings(artifacts=str(tmp_path / "artifacts"), output=str(tmp_path / "out"), temp_dir=str(tmp_path),
                        local_source_roots=(str(tmp_path),))
    store = LocalArtifactStore(settings.artifacts)
    return LocalContext(job_id=job_id, stage=stage, spec=JobSpec(job_id=job_id, task="process-all", **spec),
                        settings=settings, artifacts=store)


def built(tmp_path: Path) -> tuple[LocalContext, apsw.Connection]:
    ctx = make_ctx(tmp_path)
    assert isinstance(ctx.artifacts, LocalArtifactStore)
    write_job_inputs(ctx.artifacts, ctx.job_id)
    result = build_db.run(ctx)
    assert result.finished
    return ctx, apsw.Connection(str(ctx.artifacts.path(ctx.key("content.sqlite"))), flags=apsw.SQLITE_OPEN_READONLY)


def rows(con: apsw.Connection, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in con.execute(sql, args)]


def test_every_table_filled(tmp_path: Path) -> None:
    ctx, con = built(tmp_path)
    assert rows(con, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(con, "SELECT _id, _slug, _type, _path FROM posts ORDER BY rowid") == [
        (H_HELLO, "hello", "post", "hello.md"), (H_NOTES, "notes", "post", "notes/index.md"),
        (H_PRIVET, "privet", "post", "ru/privet.md")]
    assert rows(con, "SELECT * FROM medias ORDER BY path") == [
        (M_CAT, "img/cat.png", "cat.png", "png", "image/png", 640, 480, len(CAT)),
        (M_DOG, "img/dog.jpg", "dog.jpg", "jpg", "image/jpeg", 640, 480, len(DOG))]
    assert rows(con, "SELECT id, name FROM tags ORDER BY id") == [(1, "python"), (2, "sqlite")]
    assert sorted(rows(con, "SELECT p._slug, t.name FROM post_tags pt JOIN posts p ON p._id = pt.post_id "
                            "JOIN tags t ON t.id = pt.tag_id")) == [
        ("hello", "python"), ("hello", "sqlite"), ("privet", "python")]
    # the link to a post that does not exist is not kept
    assert sorted(rows(con, "SELECT source_id, target_id FROM links")) == sorted(
        [(H_HELLO, H_PRIVET), (H_PRIVET, H_HELLO), (H_NOTES, H_HELLO)])
    # media referenced by hash and by original path both land
    assert sorted(rows(con, "SELECT post_id, media_id FROM post_media")) == sorted(
        [(H_HELLO, M_CAT), (H_PRIVET, M_DOG)])
    indexes = {r[0] for r in rows(con, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"idx_posts_slug", "idx_post_tags_tag", "idx_links_target", "idx_post_media_media",
            "idx_posts_fm_draft", "idx_posts_fm_date"} <= indexes
    assert ctx.issues == []
    assert rows(con, "PRAGMA integrity_check") == [("ok",)]


def test_summary(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    assert isinstance(ctx.artifacts, LocalArtifactStore)
    write_job_inputs(ctx.artifacts, ctx.job_id)
    summary = build_db.run(ctx).summary
    assert summary["bytes"] == len(ctx.artifacts.get_bytes(ctx.key("content.sqlite")))
    assert {k: summary[k] for k in ("posts", "medias", "tags", "links")} == {"posts": 3, "medias": 2, "tags": 2,
                                                                             "links": 3}


def test_typed_frontmatter_columns(tmp_path: Path) -> None:
    _, con = built(tmp_path)
    types = {r[1]: r[2] for r in rows(con, "PRAGMA table_info(posts)")}
    assert {k: types[k] for k in ("cover_image", "draft", "rating", "tags", "fm_2021_notes", "order", "date",
                                  "authors", "title", "colophon")} == {
        "cover_image": "TEXT", "draft": "INTEGER", "rating": "REAL", "tags": "TEXT", "fm_2021_notes": "TEXT",
        "order": "REAL", "date": "TEXT", "authors": "TEXT", "title": "TEXT", "colophon": "TEXT"}
    got = {r[0]: r[1:] for r in rows(con, 'SELECT _slug, draft, typeof(draft), rating, typeof(rating), cover_image, '
                                          'tags, authors, fm_2021_notes, "order" FROM posts')}
    assert got["hello"] == (1, "integer", 4.5, "real", "img/cat.png", '["python","sqlite"]', None, "old", 3.0)
    assert got["privet"] == (0, "integer", 2.0, "real", None, '["python"]', '{"name":"Иван"}', None, None)
    assert got["notes"] == (None, "null", None, "null", None, None, None, None, None)
    fm, normalized = rows(con, "SELECT _frontmatter, _frontmatter_normalized FROM posts WHERE _slug = 'hello'")[0]
    assert json.loads(fm)["Cover Image"] == "img/cat.png"
    assert json.loads(normalized) == {"title": "Hello World", "cover_image": "img/cat.png", "draft": True,
                                      "rating": 4.5, "tags": ["python", "sqlite"], "colophon": "Set in Garamond",
                                      "fm_2021_notes": "old", "order": 3, "date": "2024-01-02T00:00:00.000Z"}
    assert rows(con, "SELECT _slug FROM posts WHERE draft = 0 AND rating > 1") == [("privet",)]


def search(con: apsw.Connection, query: str) -> list[str]:
    sql = (f"SELECT p._slug FROM {FTS_TABLE} JOIN posts p ON p._id = {FTS_TABLE}.post_id "
           f"WHERE {FTS_TABLE} MATCH ? ORDER BY bm25({FTS_TABLE})")
    return [r[0] for r in con.execute(sql, (query,))]


def test_full_text_search(tmp_path: Path) -> None:
    _, con = built(tmp_path)
    assert search(con, "булок") == ["privet"]  # Cyrillic
    assert search(con, "привет") == ["privet"]  # case folded, found in the title
    assert search(con, "cafe") == ["hello"]  # diacritics removed on both sides
    assert search(con, "café") == ["hello"]
    assert sorted(search(con, "home OR hello")) == ["hello", "notes"]
    assert search(con, "title:notes") == ["notes"]
    assert search(con, '"full text search"') == ["hello"]
    assert search(con, "nothinglikethis") == []
    snippet = rows(con, f"SELECT snippet({FTS_TABLE}, 2, '[', ']', '…', 4) FROM {FTS_TABLE} "
                        f"WHERE {FTS_TABLE} MATCH 'булок'")[0][0]
    assert "[булок]" in snippet


def test_backlinks(tmp_path: Path) -> None:
    _, con = built(tmp_path)
    got = {slug: json.loads(b) for slug, b in rows(con, "SELECT _slug, _backlinks FROM posts")}
    assert got == {"hello": sorted([H_PRIVET, H_NOTES]), "privet": [H_HELLO], "notes": []}


def test_same_input_same_bytes(tmp_path: Path) -> None:
    a, b = make_ctx(tmp_path, "a"), make_ctx(tmp_path, "b")
    assert isinstance(a.artifacts, LocalArtifactStore)
    write_job_inputs(a.artifacts, "a")
    write_job_inputs(a.artifacts, "b")
    build_db.run(a)
    build_db.run(b)
    assert a.artifacts.get_bytes(a.key("content.sqlite")) == b.artifacts.get_bytes(b.key("content.sqlite"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".content-")] == []


@pytest.mark.parametrize("options", [lambda d: {"assets": {"distFolder": d}}, lambda d: {"distFolder": d}])
def test_build_database_task_in_dist_folder(tmp_path: Path, options: Any) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    for name, value in sample_inputs().items():
        (dist / name).write_text(json.dumps(value, ensure_ascii=False))
    ctx = make_ctx(tmp_path, options=options(str(dist)))
    (dist / "content.sqlite").write_bytes(b"an older database")
    summary = build_db.run(ctx).summary
    assert summary["posts"] == 3 and summary["path"] == str(dist / "content.sqlite")
    con = apsw.Connection(str(dist / "content.sqlite"))
    assert rows(con, "SELECT count(*) FROM posts") == [(3,)]
    assert search(con, "булок") == ["privet"]
    con.close()
    assert sorted(p.name for p in dist.iterdir()) == sorted([*sample_inputs(), "content.sqlite"])
    assert not ctx.artifacts.exists(ctx.key("content.sqlite"))


def test_own_parse_output_wins_over_a_dist_folder_option(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, options={"distFolder": str(tmp_path / "elsewhere")})
    assert isinstance(ctx.artifacts, LocalArtifactStore)
    write_job_inputs(ctx.artifacts, ctx.job_id)
    assert "path" not in build_db.run(ctx).summary
    assert ctx.artifacts.exists(ctx.key("content.sqlite")) and not (tmp_path / "elsewhere").exists()


def test_dist_folder_without_posts_is_permanent(tmp_path: Path) -> None:
    (tmp_path / "dist").mkdir()
    ctx = make_ctx(tmp_path, options={"assets": {"distFolder": str(tmp_path / "dist")}})
    with pytest.raises(PermanentError, match="posts.json"):
        build_db.run(ctx)
    ctx = make_ctx(tmp_path, options={"distFolder": str(tmp_path / "missing")})
    with pytest.raises(PermanentError, match="does not exist"):
        build_db.run(ctx)


def test_missing_parse_output_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="missing"):
        build_db.run(make_ctx(tmp_path))


def test_column_names() -> None:
    assert sanitize_key("Cover Image") == "cover_image"
    assert sanitize_key("Título") == "t_tulo"
    cols = plan_columns([{"Title": "a", "title": "b", "_id": 1, "fm__id": 2, "2x": True, "rowid": "r",
                          "_wordCount": 3, "order": None}])
    assert cols.names == {"Title": "title", "title": "title", "_id": "fm__id", "fm__id": "fm__id_2",
                          "2x": "fm_2x", "rowid": "fm_rowid", "_wordCount": "fm__wordcount", "order": "order"}
    assert cols.types == {"title": "TEXT", "fm__id": "REAL", "fm__id_2": "REAL", "fm_2x": "INTEGER",
                          "fm_rowid": "TEXT", "fm__wordcount": "REAL", "order": "TEXT"}
    # mixed types across posts fall back to TEXT
    assert plan_columns([{"x": 1}, {"x": "one"}, {"x": True}]).types == {"x": "TEXT"}
    assert plan_columns([{"x": 1}, {"x": 2.5}]).types == {"x": "REAL"}


def test_too_many_frontmatter_keys_keep_the_most_used(tmp_path: Path) -> None:
    cols = plan_columns([{"common": 1, "rare_a": 1}, {"common": 2, "rare_b": 2}], limit=2)
    assert sorted(cols.types) == ["common", "rare_a"] and cols.dropped == ["rare_b"]
    assert cols.names["rare_b"] == "rare_b"  # still normalised in _frontmatter_normalized
