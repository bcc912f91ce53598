"""Tier 1: Zola, Hugo and Jekyll sites through fetch and parse in-process: links in each generator's syntax,
dates from frontmatter, names, paths and one walk of the git history, section pages, drafts, template syntax."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dulwich.objects import Commit
from dulwich.repo import Repo

from pipeline.bundle_db.schema import write_content_db
from pipeline.errors import PermanentError
from pipeline.markdown.site_conventions import is_draft, site_urls
from pipeline.markdown.site_dates import post_date
from pipeline.markdown.site_links import mark_generator_links
from pipeline.models import JobSpec, SourceSpec
from pipeline.settings import Settings
from pipeline.sources.git_history import file_dates
from pipeline.stages import fetch, parse
from pipeline.stages.context import LocalContext, run_to_end
from pipeline.stages.parsed_posts import iter_posts
from pipeline.stores.artifacts import LocalArtifactStore
from tests.stages.site_fixtures import HUGO, JEKYLL, ZOLA_DATES, write_files, zola_blog

pytestmark = pytest.mark.timeout(60)


@dataclass
class Built:
    posts: dict[str, dict[str, Any]]
    medias: dict[str, dict[str, Any]]
    graph: dict[str, Any]
    issues: list[dict[str, Any]]
    summary: dict[str, Any]
    fetch_issues: list[Any]

    def links(self, rel: str) -> list[str]:
        """The paths of the posts `rel` links to."""
        by_hash = {p["hash"]: path for path, p in self.posts.items()}
        return sorted(by_hash[h] for h in self.posts[rel]["links"])

    def problems(self, rel: str) -> list[tuple[str, str]]:
        return sorted((str(i["kind"]), str(i["message"])) for i in self.issues if i["path"] == rel)


def build(tmp_path: Path, source: SourceSpec, **options: Any) -> Built:
    where = Path(source.path or (source.url or "").removeprefix("file://"))
    settings = Settings(artifacts=str(tmp_path / "art"), output=str(tmp_path / "out"), temp_dir=str(tmp_path),
                        local_source_roots=(str(where.parent),))
    store = LocalArtifactStore(settings.artifacts)
    spec = JobSpec(job_id="j", task="process-all", source=source, options=options)
    fetched = LocalContext(job_id="j", stage="fetch", spec=spec, settings=settings, artifacts=store)
    fetch.run(fetched)
    ctx = LocalContext(job_id="j", stage="parse", spec=spec, settings=settings, artifacts=store,
                       batch_fn=parse.run_batch)
    summary = run_to_end(parse.run, ctx).summary

    def result(name: str) -> Any:
        return store.get_json(f"jobs/j/parse/result/{name}")

    return Built({p["originalFilePath"]: p for p in iter_posts(store, "j")},
                 {m["originalPath"]: m for m in result("medias.json")}, result("graph.json"),
                 result("processor-issues.json")["issues"], summary, fetched.issues)


@pytest.fixture
def zola(tmp_path: Path) -> Built:
    return build(tmp_path, SourceSpec(path=str(zola_blog(tmp_path / "zola"))))


def test_git_dates_of_every_post_and_image_from_the_history(zola: Built) -> None:
    for rel, (created, modified) in ZOLA_DATES.items():
        entry = zola.medias.get(rel) or zola.posts[rel]
        assert (entry["gitCreated"], entry["gitModified"]) == (created, modified), rel
    assert zola.fetch_issues == []


def test_history_is_one_walk_with_merges_counted_as_git_log_shows_them(tmp_path: Path) -> None:
    repo = zola_blog(tmp_path / "zola")
    with Repo(str(repo)) as r:
        head = r.head().decode()
    dates = file_dates(repo, head, lambda p: p.endswith(".md"))
    assert dates.commits == 5 and not dates.shallow
    assert "content/blog/pic.png" not in dates.files and "config.toml" not in dates.files
    assert dates.to_json()["files"]["content/blog/gats.md"] == list(ZOLA_DATES["content/blog/gats.md"])


def test_date_precedence_and_its_source(zola: Built) -> None:
    got = {rel: (p.get("date"), p.get("dateSource")) for rel, p in zola.posts.items()}
    assert got["content/blog/explicit.md"] == ("2021-05-05", "frontmatter")
    assert got["content/blog/2020-01-31-dated.md"] == ("2020-01-31", "fileName")
    assert got["content/blog/gats.md"] == ("2022-10-28", "path")
    assert got["content/inside-rust/foo.md"] == (ZOLA_DATES["content/inside-rust/foo.md"][0], "git")
    assert all(date for date, _ in got.values())


def test_zola_links_content_relative_permalinks_and_aliases(zola: Built) -> None:
    assert zola.links("content/blog/gats.md") == ["content/inside-rust/foo.md"]
    assert zola.links("content/inside-rust/foo.md") == ["content/blog/_index.md", "content/blog/gats.md"]
    # an alias is a URL the post is also served at
    assert zola.links("content/blog/2020-01-31-dated.md") == ["content/inside-rust/foo.md"]
    foo = zola.posts["content/inside-rust/foo.md"]
    assert f'href="/_repo/notes/{foo["slug"]}#the-plan"' in zola.posts["content/blog/gats.md"]["html"]
    assert 'href="#broken-link:@/inside-rust/missing.md"' in foo["html"]
    assert zola.problems("content/inside-rust/foo.md") == [("broken-link",
                                                             "broken link: @/inside-rust/missing.md")]
    edges = {(e["source"], e["target"]) for e in zola.graph["edges"] if e["type"] == "POST_LINKS_TO_POST"}
    assert (zola.posts["content/blog/gats.md"]["hash"], foo["hash"]) in edges


def test_links_reach_the_database_as_links_and_backlinks(zola: Built, tmp_path: Path) -> None:
    db = tmp_path / "content.sqlite"
    write_content_db(db, list(zola.posts.values()), list(zola.medias.values()), zola.graph)
    con = sqlite3.connect(db)
    try:
        by_hash = {p["hash"]: rel for rel, p in zola.posts.items()}
        links = {(by_hash[s], by_hash[t]) for s, t in con.execute("SELECT source_id, target_id FROM links")}
        backlinks = dict(con.execute("SELECT _path, _backlinks FROM posts"))
        types = dict(con.execute("SELECT _path, _type FROM posts"))
    finally:
        con.close()
    assert ("content/blog/gats.md", "content/inside-rust/foo.md") in links
    assert ("content/inside-rust/foo.md", "content/blog/gats.md") in links
    assert zola.posts["content/blog/gats.md"]["hash"] in backlinks["content/inside-rust/foo.md"]
    assert types["content/blog/_index.md"] == "section" and types["content/blog/gats.md"] == "post"


def test_sections_named_after_their_folder_and_drafts_left_out(zola: Built, tmp_path: Path) -> None:
    sections = {rel: p["slug"] for rel, p in zola.posts.items() if p.get("isSection")}
    assert sections == {"content/_index.md": "content", "content/blog/_index.md": "blog",
                        "content/inside-rust/_index.md": "inside-rust"}
    assert "content/blog/wip.md" not in zola.posts
    assert zola.summary["drafts"] == 1 and zola.summary["posts"] == 7
    with_drafts = build(tmp_path / "again", SourceSpec(path=str(tmp_path / "zola")), includeDrafts=True)
    assert "content/blog/wip.md" in with_drafts.posts and with_drafts.summary["drafts"] == 0


def test_template_syntax_kept_in_html_but_not_in_plain_text(zola: Built) -> None:
    gats = zola.posts["content/blog/gats.md"]
    assert "{{ youtube(id=&quot;abc123&quot;) }}" in gats["html"]  # as any text of the HTML is written
    assert "youtube" not in gats["plain"] and "{{" not in gats["plain"]
    assert gats["plain"].startswith("See the details and the video.")


def test_shallow_clone_says_so_and_falls_back(tmp_path: Path) -> None:
    repo = zola_blog(tmp_path / "zola")
    built = build(tmp_path / "run", SourceSpec(url=f"file://{repo}", depth=1))
    assert [(i.kind, i.severity) for i in built.fetch_issues] == [("git-history", "warning")]
    assert "shallow clone (depth 1)" in built.fetch_issues[0].message
    assert not any("gitCreated" in p for p in built.posts.values())
    assert built.posts["content/blog/gats.md"]["dateSource"] == "path"
    assert "date" not in built.posts["content/inside-rust/foo.md"]


def test_hugo_ref_relref_url_and_bundles(tmp_path: Path) -> None:
    hugo = build(tmp_path, SourceSpec(path=str(write_files(tmp_path / "hugo", HUGO))))
    second, third = "content/posts/second/index.md", "content/posts/third.md"
    assert hugo.links(second) == ["content/posts/first.md"]
    # a link to the site's own address (config.toml baseURL) is a link inside the site
    assert hugo.links(third) == ["content/posts/first.md", second]
    assert 'href="/_repo/notes/first#sec"' in hugo.posts[third]["html"]
    assert 'href="https://elsewhere.example.org/posts/first/"' in hugo.posts[third]["html"]
    assert hugo.problems(third) == [("unresolved-link", "link names no post: https://hugo.example.org/posts/gone/")]
    assert hugo.posts[second]["slug"] == "second" and "isSection" not in hugo.posts[second]
    assert hugo.posts["content/posts/_index.md"]["slug"] == "posts"
    assert hugo.posts["content/posts/_index.md"]["isSection"] is True
    html = hugo.posts[second]["html"]
    assert 'href="/_repo/notes/first"' in html and 'href="/_repo/notes/first#sec"' in html
    assert "[kept]({{&lt; ref &quot;first.md&quot; &gt;}})" in html  # in code: left as written
    assert hugo.problems(second) == [("broken-link", "broken link: nothing.md")]
    assert (hugo.posts[second]["date"], hugo.posts[second]["dateSource"]) == ("2023-03-02", "frontmatter")
    assert "content/posts/draft.md" not in hugo.posts and hugo.summary["drafts"] == 1
    plain = hugo.posts[third]["plain"]
    assert "{{" not in plain and "youtube" not in plain and "inside" in plain
    assert "figure" not in hugo.posts[second]["plain"] and "Plain words." in hugo.posts[second]["plain"]


def test_jekyll_post_url_link_and_pretty_permalinks(tmp_path: Path) -> None:
    jekyll = build(tmp_path, SourceSpec(path=str(write_files(tmp_path / "jekyll", JEKYLL))))
    other, name = "_posts/2011-01-02-other.md", "_posts/2010-07-21-name.md"
    assert jekyll.links(other) == ["_posts/2010-07-21-name.md", "about.md"]
    assert jekyll.links("about.md") == [other]
    assert jekyll.posts[other]["html"].count('href="/_repo/notes/2010-07-21-name"') == 4
    assert jekyll.problems(other) == [("broken-link", "broken link: 1999-01-01-missing")]
    assert (jekyll.posts[name]["date"], jekyll.posts[name]["dateSource"]) == ("2010-07-21", "fileName")
    assert jekyll.posts[other]["dateSource"] == "frontmatter"
    assert sorted(jekyll.posts) == ["_posts/2010-07-21-name.md", other, "about.md"]
    assert jekyll.summary["drafts"] == 2
    assert "include" not in jekyll.posts[other]["plain"]
    # a folder without history: no git dates, and no issue about it
    assert not any("gitCreated" in p for p in jekyll.posts.values()) and jekyll.fetch_issues == []


def test_a_link_that_names_no_post_is_reported_and_kept(tmp_path: Path) -> None:
    site = write_files(tmp_path / "s", {"a.md": b"[team](/team/) [pdf](/files/x.pdf) [ok](/b/) [home](/)\n",
                                        "b.md": b"[back](https://www.example.com/a)\n"})
    built = build(tmp_path, SourceSpec(path=str(site)), domain="www.example.com")
    assert built.links("a.md") == ["b.md"]
    assert built.links("b.md") == ["a.md"]  # the job's domain is the site's own address
    assert built.problems("a.md") == [("unresolved-link", "link names no post: /team/")]
    assert 'href="/team/"' in built.posts["a.md"]["html"] and 'href="/files/x.pdf"' in built.posts["a.md"]["html"]
    assert 'href="https://www.example.com/_repo/notes/a"' in built.posts["b.md"]["html"]


def test_generator_links_are_marked_outside_code_only() -> None:
    body = ('[a]({{< ref "x.md" >}}) `[b]({{< ref "y.md" >}})`\n\n~~~\n[c]({% post_url z %})\n~~~\n'
            "[d]({{ site.baseurl }}{% post_url 2010-01-01-w %}#top)\n")
    marked = mark_generator_links(body)
    assert "[a](x-repobuild-ref:hugo:x.md)" in marked
    assert '`[b]({{< ref "y.md" >}})`' in marked and "[c]({% post_url z %})" in marked
    assert "[d](x-repobuild-ref:jekyll-post:2010-01-01-w#top)" in marked


def test_include_drafts_must_be_a_flag(tmp_path: Path) -> None:
    site = write_files(tmp_path / "s", {"a.md": b"A\n"})
    with pytest.raises(PermanentError, match="includeDrafts"):
        build(tmp_path, SourceSpec(path=str(site)), includeDrafts="yes")


def test_dates_names_and_drafts_read_as_the_generators_do() -> None:
    assert post_date({}, "_posts/2020-13-45-not-a-date.md", None) is None
    assert post_date({}, "posts/2020-02-29-leap/index.md", "x") == ("2020-02-29", "fileName")
    assert post_date({"path": "blog/2022/10/28/x"}, "a.md", None) is None  # a Zola path starts with the date
    assert post_date({"date": "2001-01-01", "path": "2022/10/28/x"}, "2020-01-31-a.md", "g") == ("2001-01-01",
                                                                                                 "frontmatter")
    assert is_draft({"draft": "true"}, "a.md") and is_draft({"published": False}, "a.md")
    assert is_draft({}, "blog/_drafts/a.md") and not is_draft({"draft": False, "published": True}, "_drafts.md")
    assert site_urls("_posts/2010-07-21-name.md", {"permalink": "/:year/:title/"}, "") == [
        "/2010/07/21/name/", "/name/"]
    assert site_urls("content/blog/x.md", {"path": "2022/x", "slug": "y"}, "content") == ["2022/x", "/blog/y/"]


def test_a_history_with_an_object_missing_gives_no_dates_and_names_it(tmp_path: Path) -> None:
    repo = zola_blog(tmp_path / "zola")
    with Repo(str(repo)) as r:
        head = r.head()
        commit = r[head]
        while isinstance(commit, Commit) and commit.parents:
            commit = r[commit.parents[0]]
        assert isinstance(commit, Commit)
        root_tree = commit.tree
    loose = repo / ".git" / "objects" / root_tree[:2].decode() / root_tree[2:].decode()
    loose.unlink()  # the first commit's tree: the checkout of head still works, its history does not
    dates = file_dates(repo, head.decode(), lambda p: True)
    assert dates.files == {} and dates.missing == root_tree.decode() and not dates.shallow


def test_a_config_that_does_not_parse_is_reported_and_the_site_still_builds(tmp_path: Path) -> None:
    site = write_files(tmp_path / "s", {"config.toml": b"base_url = [unclosed\n", "a.md": b"[b](https://x.org/b/)\n",
                                        "b.md": b"B\n"})
    built = build(tmp_path, SourceSpec(path=str(site)))
    assert built.problems("config.toml") == [("config", "config.toml: not read for the site's address "
                                                        "(TOMLDecodeError)")]
    assert built.links("a.md") == []
