"""The parse stage run in-process on a local artifact store: demo repository, broken inputs, resumability,
and the two real corpora. No Redis, no Celery."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.canonical_json import canonical_json
from pipeline.catalog import POST_LINES, SOURCE_TREE, job_key
from pipeline.errors import PermanentError
from pipeline.models import JobSpec
from pipeline.settings import Settings
from pipeline.stages import parse
from pipeline.stages.context import LocalContext, run_to_end
from pipeline.stages.parsed_posts import iter_posts
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.json_lines import lines_header, part_key

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "samples" / "demo-repo"
from tests.conftest import CORPORA  # noqa: E402

RESULTS = ("posts.json", "medias.json", "graph.json", "files-source.json", "processor-issues.json", "meta.json")


def make_ctx(tmp_path: Path, source: Path, job_id: str = "job1", budget_s: float | None = None,
             batch: int = 50, **options: Any) -> LocalContext:
    store = LocalArtifactStore(tmp_path / "artifacts")
    tree = store.path(job_key(job_id, "fetch", "tree"))
    if not tree.exists():
        shutil.copytree(source, tree)
    settings = Settings(artifacts=str(tmp_path / "artifacts"), parse_batch=batch)
    spec = JobSpec(job_id=job_id, task="process-all", options=options)
    return LocalContext(job_id=job_id, stage="parse", spec=spec, settings=settings, artifacts=store,
                        budget_s=budget_s, batch_fn=parse.run_batch)


def result(ctx: LocalContext, name: str) -> Any:
    """One of parse's outputs; "posts.json" is the posts as later stages read them (JSON lines in parts)."""
    if name == "posts.json":
        return list(iter_posts(ctx.artifacts, ctx.job_id))
    return ctx.artifacts.get_json(ctx.key(f"result/{name}"))


def result_bytes(ctx: LocalContext) -> dict[str, bytes]:
    """The outputs' bytes; the posts' lines joined, whatever parts they were cut into."""
    def stored(name: str) -> bytes:
        if name == "posts.json":
            key = POST_LINES.key(ctx.job_id)
            return b"".join(ctx.artifacts.get_bytes(part_key(key, n))
                            for n in range(lines_header(ctx.artifacts, key)["parts"]))
        return ctx.artifacts.get_bytes(ctx.key(f"result/{name}"))

    return {name: stored(name) for name in RESULTS}


@pytest.fixture
def demo(tmp_path: Path) -> LocalContext:
    ctx = make_ctx(tmp_path, DEMO)
    run_to_end(parse.run, ctx)
    return ctx


def by_path(ctx: LocalContext) -> dict[str, dict[str, Any]]:
    return {p["originalFilePath"]: p for p in result(ctx, "posts.json")}


def test_demo_posts_and_exclusions(demo: LocalContext) -> None:
    posts = by_path(demo)
    # README is never a post; drafts/ is excluded by .repoignore.
    assert sorted(posts) == ["getting-started.md", "guides/deploy.md", "guides/index.md", "guides/setup.md",
                             "markdown-tips.md", "notes/ideas.md", "notes/reading-list.md", "notes/setup.md",
                             "welcome.md"]
    assert [p["originalFilePath"] for p in result(demo, "posts.json")] == sorted(posts)
    assert result(demo, "meta.json") == {"root": "", "posts": 9, "medias": 3, "drafts": 0}
    fields = {"fileName", "slug", "title", "frontmatter", "firstParagraphText", "plain", "wordCount", "html", "toc",
              "originalFilePath", "folder", "url", "hash", "links", "fsCreated", "fsModified", "_slugInfo", "tags"}
    for post in posts.values():
        assert fields <= set(post) <= fields | {"firstImage", "date", "dateSource"}


def test_demo_slugs(demo: LocalContext) -> None:
    posts = by_path(demo)
    assert posts["guides/index.md"]["slug"] == "guides"
    assert posts["getting-started.md"]["slug"] == "start"  # frontmatter slug, verbatim
    assert posts["guides/setup.md"]["slug"] == "setup"
    assert posts["notes/setup.md"]["_slugInfo"] == {"desiredSlug": "setup", "disambiguatedSlug": "setup-2",
                                                    "finalSlug": "setup-2", "isDisambiguated": True}
    assert posts["notes/setup.md"]["url"] == "/_repo/notes/setup-2"
    assert posts["notes/setup.md"]["fileName"] == "setup"
    assert posts["notes/setup.md"]["folder"] == "notes" and posts["welcome.md"]["folder"] == ""


def test_demo_frontmatter_dates_tags_title(demo: LocalContext) -> None:
    posts = by_path(demo)
    toml = posts["notes/reading-list.md"]
    assert toml["frontmatter"] == {"title": "Reading list", "date": "2024-02-20T18:00:00+00:00",
                                   "tags": ["books", "notes"], "extra": {"rating": 5}}
    assert toml["date"] == "2024-02-20T18:00:00+00:00" and toml["tags"] == ["books", "notes"]
    start = posts["getting-started.md"]
    assert start["date"] == "2024-03-02T09:30:00+00:00"
    assert start["tags"] == ["howto", "basics"]  # a comma-separated string
    cover = next(m for m in result(demo, "medias.json") if m["originalPath"] == "images/cover.png")
    assert start["frontmatter"]["image"] == f"/_repo/medias/{cover['hash']}-lg.webp"
    assert posts["welcome.md"]["date"] == "2024-03-01" and posts["welcome.md"]["title"] == "Welcome to the demo"
    assert "date" not in posts["notes/setup.md"] and posts["guides/index.md"]["tags"] == []


def test_demo_links_images_and_html(demo: LocalContext) -> None:
    posts = by_path(demo)
    medias = {m["originalPath"]: m for m in result(demo, "medias.json")}
    html = posts["welcome.md"]["html"]
    assert '<a href="/_repo/notes/setup">the setup guide</a>' in html
    assert '<a href="/_repo/notes/markdown-tips#tables">section on tables</a>' in html
    assert '<a href="/_repo/notes/deploy#checklist">the deploy guide</a>' in html
    assert '<a href="/_repo/notes/guides">Guides</a>' in html
    assert '<a href="https://example.org/">an external site</a>' in html
    cover = medias["images/cover.png"]["hash"]
    assert (f'<img src="/_repo/medias/{cover}-lg.webp" alt="A cover image" width="320" height="180" loading="lazy" />'
            in html)
    assert posts["welcome.md"]["firstImage"] == f"/_repo/medias/{cover}-lg.webp"
    photo = medias["images/photo.jpg"]["hash"]
    assert f'src="/_repo/medias/{photo}-lg.webp" alt="Photo of the server room" width="240" height="160"' in \
        posts["guides/deploy.md"]["html"]
    svg = medias["images/diagram.svg"]
    assert (svg["metadata"]["width"], svg["metadata"]["height"]) == (200, 100)
    tips = posts["markdown-tips.md"]
    assert [t["id"] for t in tips["toc"]] == ["tables", "code", "images", "tables-2"]
    assert "<h2 id=\"tables-2\">Tables</h2>" in tips["html"]
    hashes = {p["originalFilePath"]: p["hash"] for p in posts.values()}
    linked = ["getting-started.md", "guides/deploy.md", "guides/index.md", "guides/setup.md", "markdown-tips.md",
              "notes/reading-list.md"]
    assert posts["welcome.md"]["links"] == sorted(hashes[p] for p in linked)


def test_demo_broken_link_marked_and_reported(demo: LocalContext) -> None:
    ideas = by_path(demo)["notes/ideas.md"]
    assert '<a href="#broken-link:Future plans">Future plans</a>' in ideas["html"]
    warnings = [i for i in demo.issues if i.severity == "warning"]
    assert [(i.stage, i.path, i.message) for i in warnings] == [("parse", "notes/ideas.md",
                                                                 "broken link: Future plans")]
    report = result(demo, "processor-issues.json")
    assert report["issues"] == [i.to_json() for i in demo.issues]
    summary = report["summary"]
    assert (summary["totalIssues"], summary["errorCount"], summary["warningCount"], summary["infoCount"],
            summary["brokenLinks"], summary["parseErrors"]) == (2, 0, 1, 1, 1, 0)


def test_demo_hashes_medias_graph_and_files(demo: LocalContext) -> None:
    posts = result(demo, "posts.json")
    for post in posts:
        body = {k: post[k] for k in ("fileName", "slug", "title", "frontmatter", "originalFilePath", "html", "url")}
        assert post["hash"] == hashlib.sha256(canonical_json(body)).hexdigest()
    medias = result(demo, "medias.json")
    tree = demo.artifacts.tree(SOURCE_TREE.key(demo.job_id))
    for m in medias:
        digest = hashlib.sha256((tree / m["originalPath"]).read_bytes()).hexdigest()
        assert m["hash"] == m["metadata"]["hash"] == digest
        assert m["hashPath"] == f"{digest}.{m['fileExt']}" and m["effectivePath"] == m["originalPath"]
        assert m["sizes"] == {} and m["metadata"]["size"] == (tree / m["originalPath"]).stat().st_size
    assert [m["mimeType"] for m in medias] == ["image/png", "image/svg+xml", "image/jpeg"]
    graph = result(demo, "graph.json")
    ids = [n["id"] for n in graph["nodes"]]
    assert ids == [p["hash"] for p in posts] + [m["hash"] for m in medias]
    edges = {(e["source"], e["target"], e["type"]) for e in graph["edges"]}
    assert len(edges) == len(graph["edges"])
    for post in posts:
        assert {t for s, t, k in edges if s == post["hash"] and k == "POST_LINKS_TO_POST"} == set(post["links"])
    welcome = next(p for p in posts if p["originalFilePath"] == "welcome.md")
    assert (welcome["hash"], medias[0]["hash"], "POST_USE_IMAGE") in edges
    files = result(demo, "files-source.json")
    assert [f["path"] for f in files] == sorted(f["path"] for f in files)
    assert {"path": "guides/index.md", "filename": "index.md", "extension": "md",
            "size": (tree / "guides/index.md").stat().st_size, "folder": ["guides"]} in files
    assert "README.md" in [f["path"] for f in files]


def test_bad_posts_are_skipped_and_recorded(tmp_path: Path) -> None:
    src = tmp_path / "repo"
    shutil.copytree(DEMO, src)
    (src / "notes" / "bad-frontmatter.md").write_text("---\ntitle: [unclosed\n---\n\nBody\n")
    (src / "latin1.md").write_bytes("---\ntitle: Café\n---\nDéjà vu\n".encode("latin-1"))
    (src / "list-frontmatter.md").write_text("---\n- a\n---\nx\n")
    ctx = make_ctx(tmp_path, src)
    summary = run_to_end(parse.run, ctx).summary
    assert summary["posts"] == 9
    errors = {i.path: i.message for i in ctx.issues if i.severity == "error"}
    assert set(errors) == {"notes/bad-frontmatter.md", "latin1.md", "list-frontmatter.md"}
    assert errors["latin1.md"].startswith("not valid UTF-8")
    assert errors["notes/bad-frontmatter.md"].startswith("invalid YAML frontmatter")
    assert "not a mapping" in errors["list-frontmatter.md"]
    assert result(ctx, "processor-issues.json")["summary"]["parseErrors"] == 3


def test_repository_folder_and_options(tmp_path: Path) -> None:
    src = tmp_path / "mono"
    shutil.copytree(DEMO, src / "docs" / "site")
    (src / "outside.md").write_text("# not part of the repository\n")
    ctx = make_ctx(tmp_path, src, repositoryFolder="docs/site/", domain="example.org", notePrefix="/n")
    run_to_end(parse.run, ctx)
    assert result(ctx, "meta.json") == {"root": "docs/site", "posts": 9, "medias": 3, "drafts": 0}
    posts = by_path(ctx)
    assert "outside.md" not in posts
    assert posts["welcome.md"]["url"] == "https://example.org/n/welcome"
    assert '<a href="https://example.org/n/setup">' in posts["welcome.md"]["html"]
    assert 'src="https://example.org/_repo/medias/' in posts["welcome.md"]["html"]
    for bad in ("../elsewhere", "/etc", "docs/../../x", "missing"):
        with pytest.raises(PermanentError):
            parse.run(make_ctx(tmp_path, src, job_id="job1", repositoryFolder=bad))


def test_one_shot_equals_yield_after_every_step(tmp_path: Path) -> None:
    one = make_ctx(tmp_path / "one", DEMO, batch=2)
    run_to_end(parse.run, one)
    many = make_ctx(tmp_path / "many", DEMO, batch=2, budget_s=0)
    calls = 0
    while True:
        many.restart_budget()
        calls += 1
        if parse.run(many).finished:
            break
    # discovery; then the batches (run in place by LocalContext) and assembly: the plan's checkpoint, then the rest.
    assert calls == 2
    assert result_bytes(one) == result_bytes(many)
    assert many.issues == one.issues  # recorded once, not again on each continuation
    assert many.done_batches == set(range(9))  # 9 posts: a batch each, so that every process has some
    assert many.cursor == {"phase": "assemble", "batches": 9, "dispatched": True}


def many_posts(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    for n in range(count):
        # a link to the next post and one to a page that does not exist: an issue per post
        (folder / f"post-{n:03d}.md").write_text(f"# Post {n}\n\nSee [the next](post-{n + 1:03d}.md) and "
                                                 f"[[Nowhere {n}]].\n", encoding="utf-8")
    return folder


def test_batches_are_fixed_by_discovery_and_redone_identically(tmp_path: Path) -> None:
    src = many_posts(tmp_path / "repo", 70)
    first = make_ctx(tmp_path, src, batch=2, budget_s=0)
    assert not parse.run(first).finished  # discovery: the index fixes 35 batches of 2 posts
    assert first.cursor == {"phase": "batches", "batches": 35, "dispatched": False}
    parse.run_batch(first, 0)
    batch0 = first.artifacts.get_bytes(first.key("batch-00000.json"))
    # A batch redelivered (its worker died after writing it, or a copy was sent again): the same bytes, and no
    # issue recorded by the batch itself, so none listed twice.
    parse.run_batch(first, 0)
    assert first.artifacts.get_bytes(first.key("batch-00000.json")) == batch0
    assert first.issues == []
    # The next run has other settings (they would make 12 batches of 6): the batches stay the index's.
    redo = make_ctx(tmp_path, src, batch=50)
    redo.cursor = first.cursor
    run_to_end(parse.run, redo)
    assert redo.done_batches == set(range(35))
    assert redo.artifacts.get_bytes(redo.key("batch-00000.json")) == batch0
    reference = make_ctx(tmp_path / "ref", src, batch=50)
    run_to_end(parse.run, reference)
    assert reference.done_batches == set(range(12))
    assert result_bytes(redo) == result_bytes(reference)
    # each post's broken link once (the last post's link to the next one too), in path order, as in the report
    assert [i.path for i in redo.issues] == sorted([f"post-{n:03d}.md" for n in range(70)] + ["post-069.md"])
    assert redo.issues == reference.issues
    assert result(redo, "processor-issues.json")["issues"] == [i.to_json() for i in redo.issues]


def test_a_job_left_half_done_by_the_serial_parse_is_taken_over(tmp_path: Path) -> None:
    """What the parse before the fan-out left after its third batch (its cursor, its index without a batch size,
    the issues of the batches it rendered recorded) is finished with the same output and every issue once."""
    src = many_posts(tmp_path / "repo", 70)
    reference = make_ctx(tmp_path / "ref", src, batch=5)
    run_to_end(parse.run, reference)
    old = make_ctx(tmp_path, src, batch=5, budget_s=0)
    parse.run(old)  # discovery, then the batches and the index as the serial parse wrote them
    for n in range(3):
        parse.run_batch(old, n)
    index = old.artifacts.get_json(old.key("index.json"))
    del index["batch"]
    old.artifacts.put_json(old.key("index.json"), index)
    old.issues = [i for i in reference.issues if i.path < "post-015.md"]
    old.cursor, old.done_batches = {"phase": "render", "next": 15, "total": 70, "batch": 5}, set()
    run_to_end(parse.run, old)
    assert old.done_batches == set(range(14))
    assert result_bytes(old) == result_bytes(reference)
    assert old.issues == reference.issues


def test_a_job_is_cut_into_enough_batches_for_every_process() -> None:
    assert parse.posts_per_batch(349, 50) == 30  # the whole opensource-guide: 12 batches, not 7
    assert parse.posts_per_batch(10_000, 50) == 50  # a large repository: the configured batch
    assert parse.posts_per_batch(9, 50) == parse.posts_per_batch(0, 50) == 1
    assert parse.posts_per_batch(349, 5) == 5


@pytest.mark.parametrize("corpus", ["opensource-guide", "til"])
def test_corpora_parse_without_crashes(tmp_path: Path, corpus: str) -> None:
    source = CORPORA / corpus
    if not source.is_dir():
        pytest.skip(f"{source} not present")
    ctx = make_ctx(tmp_path, source)
    started = time.perf_counter()
    summary = run_to_end(parse.run, ctx).summary
    elapsed = time.perf_counter() - started
    md_files = [p for p in source.rglob("*.md") if p.name.lower() not in ("readme.md", "license.md")]
    assert summary["posts"] == len(md_files) > 300
    assert not [i for i in ctx.issues if i.severity == "error"]
    tree = ctx.artifacts.tree(SOURCE_TREE.key(ctx.job_id))
    for issue in ctx.issues:
        assert issue.stage == "parse" and (tree / issue.path).is_file(), issue
    for post in result(ctx, "posts.json"):
        assert post["html"] and post["hash"] and post["url"].startswith("/_repo/notes/")
    print(f"\n{corpus}: {summary['posts']} posts, {summary['medias']} medias in {elapsed:.2f}s "
          f"({summary['posts'] / elapsed:.0f} posts/s)")


def test_empty_repository(tmp_path: Path) -> None:
    src = tmp_path / "empty"
    (src / "img").mkdir(parents=True)
    (src / "README.md").write_text("# nothing to publish\n")
    (src / "img" / "broken.png").write_bytes(b"not a png")
    ctx = make_ctx(tmp_path, src, budget_s=0)
    assert run_to_end(parse.run, ctx).summary == {"posts": 0, "medias": 1, "issues": 1, "drafts": 0}
    assert result(ctx, "posts.json") == []
    (media,) = result(ctx, "medias.json")
    assert (media["metadata"]["width"], media["metadata"]["height"]) == (None, None)
    assert [(i.path, i.severity) for i in ctx.issues] == [("img/broken.png", "warning")]
    assert ctx.issues[0].message.startswith("unreadable image")
