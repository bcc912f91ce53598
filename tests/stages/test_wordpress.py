"""WordPress WXR → markdown repository: a realistic export, media from a real local HTTP server, hostile input."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import PermanentError, TransientError
from pipeline.markdown.frontmatter import split_frontmatter
from pipeline.markdown.links import Resolver
from pipeline.markdown.render import render_post
from pipeline.markdown.urls import UrlScheme
from pipeline.models import JSON
from pipeline.sources.wordpress import convert_wxr
from pipeline.sources.wordpress_html import html_to_markdown
from pipeline.sources.wordpress_names import safe_name
from pipeline.sources.wordpress_report import ImportReport
from tests.conftest import LOCAL_POLICY
from tests.fakes.wordpress_site import (
    BILLION_LAUGHS,
    COVER,
    PHOTO,
    PHOTO_SMALL,
    SNEAKY,
    UPLOADS,
    MediaServer,
    item,
    realistic,
    wxr,
)


@pytest.fixture
def server() -> Iterator[MediaServer]:
    s = MediaServer({
        f"{UPLOADS}/photo.jpg": PHOTO,
        f"{UPLOADS}/photo-300x200.jpg": PHOTO_SMALL,
        f"{UPLOADS}/cover.png": COVER,
        "/wp-content/uploads/..%2F..%2Fx.png": SNEAKY,
    })
    yield s
    s.stop()


def read(dest: Path, rel: str) -> tuple[JSON, str]:
    return split_frontmatter((dest / rel).read_text(encoding="utf-8"), rel)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ realistic


def test_realistic_export(tmp_path: Path, server: MediaServer) -> None:
    dest = tmp_path / "repo"
    report = convert_wxr(realistic(server.base), dest, policy=LOCAL_POLICY)
    base = server.base

    assert (report.posts, report.pages, report.drafts) == (6, 1, 1)
    assert (report.attachments, report.attachments_downloaded, report.attachments_failed) == (3, 3, 1)
    assert report.skipped == 2
    assert report.skipped_reasons == {"status:trash": 1, "type:nav_menu_item": 1}
    expected_files = {
        "posts/hello-world/index.md", "posts/hello-world/images/photo.jpg",
        "posts/second-post/index.md", "posts/second-post/images/photo.jpg",
        "pages/about/index.md",
        "posts/_drafts/id-13/index.md",
        "posts/with-cover/index.md", "posts/with-cover/images/cover.png",
        "posts/classic-autop/index.md",
        "posts/with-caption/index.md", "posts/with-caption/images/photo.jpg",
        "posts/with-caption/images/photo-300x200.jpg", "posts/with-caption/images/cover.png",
        "posts/hello-world-2/index.md",
    }
    assert report.files == sorted(expected_files)
    assert set(tree(dest)) == expected_files
    # each URL is fetched once however many posts use it; the remote CDN image is never asked for
    assert sorted(server.requests) == sorted([f"{UPLOADS}/photo.jpg", f"{UPLOADS}/photo-300x200.jpg",
                                              f"{UPLOADS}/cover.png", "/wp-content/uploads/missing.png"])
    assert (dest / "posts/hello-world/images/photo.jpg").read_bytes() == PHOTO
    assert (dest / "posts/second-post/images/photo.jpg").read_bytes() == PHOTO
    assert (dest / "posts/with-caption/images/photo-300x200.jpg").read_bytes() == PHOTO_SMALL

    [issue] = report.issues
    assert issue.path == "posts/second-post/index.md" and issue.kind == "attachment"
    assert f"{base}/wp-content/uploads/missing.png" in issue.message and "answered 404" in issue.message

    fm, body = read(dest, "posts/hello-world/index.md")
    assert fm == {"title": "Hello World", "date": "2023-01-05T10:00:00Z", "author": "Ada Lovelace",
                  "categories": ["Travel", "Food & Drink"], "tags": ["python", "sea"],
                  "excerpt": "A short summary.", "draft": False, "wpId": 10}
    assert body.startswith("\n## Getting started\n\n")
    assert "Some *emphasis*, some **strong words** and [a link](https://example.org/docs)." in body
    assert "- first\n- second" in body and "1. one\n2. two" in body
    assert "\n\n![A photo](images/photo.jpg)\n\n![Remote](https://cdn.example.invalid/remote.png)\n" in body
    assert "wp:" not in body and "<!--" not in body and "srcset" not in body

    fm, body = read(dest, "posts/second-post/index.md")
    assert fm["author"] == "guest" and fm["tags"] == ["sea"] and "categories" not in fm
    assert "![Same photo, relative URL](images/photo.jpg)" in body
    assert f"![Gone]({base}/wp-content/uploads/missing.png)" in body
    assert "See [the full photo](images/photo.jpg)." in body

    fm, body = read(dest, "pages/about/index.md")
    assert fm["title"] == "About" and fm["draft"] is False and fm["wpId"] == 12
    assert body.strip() == "## About me\n\nI write **things**.\n\n1. one\n2. two"

    fm, body = read(dest, "posts/_drafts/id-13/index.md")
    assert fm == {"title": "Work in progress", "date": "2023-02-01T09:30:00", "author": "Ada Lovelace",
                  "draft": True, "wpId": 13}
    assert body.strip() == "Not yet."

    fm, body = read(dest, "posts/with-cover/index.md")
    assert fm["coverImage"] == "images/cover.png"
    assert (dest / "posts/with-cover/images/cover.png").read_bytes() == COVER
    assert body.strip() == "Just text."

    _, body = read(dest, "posts/classic-autop/index.md")
    assert body.strip() == ("First paragraph with *style*.\n\nSecond paragraph\\\nwith a line break.\n\n"
                            "- item one\n- item two\n\n```\ndef f():\n\n    return 1\n```\n\nLast paragraph.")

    _, body = read(dest, "posts/with-caption/index.md")
    assert body.strip() == ("[![The harbour at dawn](images/photo-300x200.jpg)](images/photo.jpg)\n\n"
                            "*The harbour at dawn*\n\nAfter the caption.\n\n![photo](images/photo.jpg)\n\n*photo*\n\n"
                            "![cover](images/cover.png)\n\n*cover*")

    fm, body = read(dest, "posts/hello-world-2/index.md")
    assert fm["title"] == "Hello again" and body.strip() == "Same slug."


def test_output_is_deterministic(tmp_path: Path, server: MediaServer) -> None:
    xml = realistic(server.base)
    first = convert_wxr(xml, tmp_path / "a", policy=LOCAL_POLICY)
    second = convert_wxr(xml, tmp_path / "b", policy=LOCAL_POLICY)
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    assert json.dumps(first.to_json(), sort_keys=True) == json.dumps(second.to_json(), sort_keys=True)


def test_private_media_hosts_are_refused_by_default(tmp_path: Path, server: MediaServer) -> None:
    dest = tmp_path / "repo"
    report = convert_wxr(realistic(server.base), dest)
    assert server.requests == []
    assert (report.posts, report.attachments_downloaded, report.attachments_failed) == (6, 0, 4)
    assert all("non-public address" in i.message for i in report.issues)
    assert {i.path for i in report.issues} == {"posts/hello-world/index.md", "posts/second-post/index.md",
                                                "posts/with-cover/index.md", "posts/with-caption/index.md"}
    fm, body = read(dest, "posts/with-cover/index.md")
    assert fm["coverImage"] == f"{server.base}{UPLOADS}/cover.png"
    _, body = read(dest, "posts/second-post/index.md")
    # the relative URL is kept in its absolute form, since the post no longer lives on the site
    assert f"![Same photo, relative URL]({server.base}{UPLOADS}/photo.jpg)" in body
    assert not [f for f in report.files if "/images/" in f]


def test_media_over_the_size_cap_is_an_issue(tmp_path: Path, server: MediaServer) -> None:
    report = convert_wxr(realistic(server.base), tmp_path / "repo", policy=LOCAL_POLICY, max_bytes=8)
    assert report.attachments_downloaded == 0 and report.attachments_failed == 4
    # one issue per item that uses a file: the photo is in three posts, the 404 is no size problem
    assert sum("larger than 8 bytes" in i.message for i in report.issues) == 6
    assert sum("answered 404" in i.message for i in report.issues) == 1 and len(report.issues) == 7
    assert report.posts == 6


def test_custom_downloader_failures_and_oversize(tmp_path: Path) -> None:
    base = "https://harbour.example"
    content = f'<p><img src="{base}/a.png" alt="a"> <img src="{base}/b.png" alt="b"></p>'
    xml = wxr(base, item(1, "post", "publish", title="T", slug="t", content=content))
    asked: list[str] = []

    def download(url: str) -> bytes:
        asked.append(url)
        if url.endswith("a.png"):
            raise TransientError("server busy (503)")
        return b"x" * 10

    report = convert_wxr(xml, tmp_path / "repo", download=download, max_bytes=5)
    assert asked == [f"{base}/a.png", f"{base}/b.png"]
    assert [i.message for i in report.issues] == [
        f"media not downloaded, original URL kept: {base}/a.png (TransientError: server busy (503))",
        f"media not downloaded, original URL kept: {base}/b.png (larger than 5 bytes)",
    ]
    _, body = read(tmp_path / "repo", "posts/t/index.md")
    assert body.strip() == f"![a]({base}/a.png) ![b]({base}/b.png)"


def test_fetch_media_off_keeps_urls(tmp_path: Path, server: MediaServer) -> None:
    report = convert_wxr(realistic(server.base), tmp_path / "repo", fetch_media=False, policy=LOCAL_POLICY)
    assert server.requests == [] and report.issues == []
    assert report.attachments_downloaded == report.attachments_failed == 0
    fm, _ = read(tmp_path / "repo", "posts/with-cover/index.md")
    assert fm["coverImage"] == f"{server.base}{UPLOADS}/cover.png"


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_older_wxr_namespaces(tmp_path: Path, version: str) -> None:
    xml = wxr("https://harbour.example", item(5, "post", "publish", title="Old", slug="old",
                                              content="<p>Old <em>times</em>.</p>", excerpt="Short."),
              version=version)
    report = convert_wxr(xml, tmp_path / "repo", fetch_media=False)
    assert report.posts == 1
    fm, body = read(tmp_path / "repo", "posts/old/index.md")
    assert fm["excerpt"] == "Short." and fm["author"] == "Ada Lovelace"
    assert body.strip() == "Old *times*."


def test_missing_featured_attachment_is_an_issue(tmp_path: Path) -> None:
    xml = wxr("https://harbour.example", item(5, "post", "publish", title="T", slug="t", content="x",
                                              meta=(("_thumbnail_id", "99"),)))
    report = convert_wxr(xml, tmp_path / "repo", fetch_media=False)
    [issue] = report.issues
    assert issue.path == "posts/t/index.md" and "attachment 99 is not in the export" in issue.message
    fm, _ = read(tmp_path / "repo", "posts/t/index.md")
    assert "coverImage" not in fm


# ------------------------------------------------------------------------------------------------ conversion


def test_classic_content_gets_paragraphs() -> None:
    md, notes = html_to_markdown("One line\nand its second line.\n\n\n  Another paragraph with a "
                                 '<a href="https://x.example/">link</a>.\n\n<h3>Title</h3>\nText under it.')
    assert notes == []
    assert md == ("One line\\\nand its second line.\n\nAnother paragraph with a [link](https://x.example/).\n\n"
                  "### Title\n\nText under it.")


def test_block_content_is_not_autop_ed() -> None:
    md, _ = html_to_markdown("<!-- wp:paragraph -->\n<p>One\ntwo</p>\n<!-- /wp:paragraph -->\n\n"
                             '<!-- wp:code -->\n<pre class="wp-block-code"><code class="language-python">'
                             "x = 1\n\ny = 2</code></pre>\n<!-- /wp:code -->\n\n"
                             '<!-- wp:embed --><iframe src="https://video.example/embed/1"></iframe><!-- /wp:embed -->')
    assert md == "One\ntwo\n\n```python\nx = 1\n\ny = 2\n```\n\n<https://video.example/embed/1>"


def test_shortcodes() -> None:
    md, _ = html_to_markdown('[caption id="a" caption="A &quot;quoted&quot; caption"]'
                             '<img src="https://s.example/p.jpg" alt="" />[/caption]\n\n'
                             '[embed]https://video.example/v/1[/embed]\n\n[contact-form-7 id="3"]')
    assert md == ('![A "quoted" caption](https://s.example/p.jpg)\n\n*A "quoted" caption*\n\n'
                  '<https://video.example/v/1>\n\n[contact-form-7 id="3"]')


def test_deeply_nested_html_falls_back_to_text(tmp_path: Path) -> None:
    deep = "<div>" * 3000 + "deep <b>text</b>" + "</div>" * 3000
    xml = wxr("https://harbour.example", item(1, "post", "publish", title="Deep", slug="deep", content=deep))
    report = convert_wxr(xml, tmp_path / "repo", fetch_media=False)
    assert report.posts == 1
    [issue] = report.issues
    assert issue.kind == "content" and "nested too deeply" in issue.message
    _, body = read(tmp_path / "repo", "posts/deep/index.md")
    assert " ".join(body.split()) == "deep text"


# ------------------------------------------------------------------------------------------------ hostile


@pytest.mark.parametrize("case", ["billion_laughs", "xxe_file", "external_dtd", "parameter_entity"])
def test_dtds_and_entities_are_refused(tmp_path: Path, server: MediaServer, case: str) -> None:
    doctype, title = {
        "billion_laughs": (BILLION_LAUGHS, "&lol9;"),
        "xxe_file": ('<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>', "&xxe;"),
        "external_dtd": (f'<!DOCTYPE rss SYSTEM "{server.base}/evil.dtd">', "plain"),
        "parameter_entity": (f'<!DOCTYPE rss [<!ENTITY % remote SYSTEM "{server.base}/evil.dtd"> %remote;]>',
                             "plain"),
    }[case]
    xml = wxr(server.base, item(1, "post", "publish", title="x", slug="x", content="x"), doctype=doctype)
    xml = xml.replace(b"<title><![CDATA[x]]></title>", f"<title>{title}</title>".encode())
    dest = tmp_path / "repo"
    started = time.monotonic()
    with pytest.raises(PermanentError, match=r"refused WXR file: it contains a DTD"):
        convert_wxr(xml, dest, policy=LOCAL_POLICY)
    assert time.monotonic() - started < 5
    assert not dest.exists()
    assert server.requests == []


@pytest.mark.parametrize(("xml", "message"), [
    (b"<rss><channel><item></channel></rss>", "not well-formed XML"),
    (b"<html><body>hello</body></html>", "not a WordPress export"),
    (b"", "not well-formed XML"),
])
def test_not_a_wxr_file(tmp_path: Path, xml: bytes, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        convert_wxr(xml, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_hostile_slugs_and_attachment_names_stay_inside(tmp_path: Path, server: MediaServer) -> None:
    sneaky = f"{server.base}/wp-content/uploads/..%2F..%2Fx.png"
    slugs = ["../../evil", "..", ".hidden", "a\\..\\b", "_drafts", "%e4%b8%ad%e6%96%87", "x" * 300, "evil",
             "bad\u202ename", "Evil", "/etc/passwd", ""]
    items = [item(100 + n, "post", "publish", title=f"t{n}", slug=slug, content="<p>x</p>")
             for n, slug in enumerate(slugs)]
    items.append(item(200, "post", "publish", title="img", slug="img", content=f'<img src="{sneaky}" alt="s">'))
    items.append(item(201, "attachment", "inherit", title="s", attachment_url=sneaky,
                      meta=(("_wp_attached_file", "../../x.png"),)))
    items.append(item("../../9", "post", "draft", title="d", content="<p>draft</p>"))
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "work" / "repo"
    report = convert_wxr(wxr(server.base, "\n".join(items)), dest, policy=LOCAL_POLICY)

    assert report.issues == [] and report.posts == len(slugs) + 1 and report.drafts == 1
    folders = sorted(f.removesuffix("/index.md") for f in report.files if f.endswith("/index.md"))
    assert folders == sorted([
        "posts/evil", "posts/post-101", "posts/hidden", "posts/a-b", "posts/drafts", "posts/中文",
        "posts/" + "x" * 100, "posts/evil-2", "posts/bad-name", "posts/Evil-3", "posts/etc-passwd",
        "posts/post-111", "posts/img", "posts/_drafts/id-9",
    ])
    assert (dest / "posts/img/images/x.png").read_bytes() == SNEAKY
    _, body = read(dest, "posts/img/index.md")
    assert body.strip() == "![s](images/x.png)"
    for root, dirs, files in os.walk(tmp_path):
        for name in dirs + files:
            path = Path(root, name)
            assert path == tmp_path / "work" or path.resolve().is_relative_to(dest.resolve()) or path == outside
            assert not name.startswith(".") and ".." not in name
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "evil").exists()


def test_symlink_in_dest_cannot_carry_writes_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "repo"
    dest.mkdir()
    (dest / "posts").symlink_to(outside, target_is_directory=True)
    xml = wxr("https://harbour.example", "\n".join([
        item(1, "post", "publish", title="P", slug="p", content="<p>post</p>"),
        item(2, "page", "publish", title="Q", slug="q", content="<p>page</p>"),
    ]))
    report = convert_wxr(xml, dest, fetch_media=False)
    assert list(outside.iterdir()) == []
    assert (report.posts, report.pages) == (0, 1)
    [issue] = report.issues
    assert issue.path == "posts/p/index.md" and issue.severity == "error"
    assert "outside the destination" in issue.message
    assert report.files == ["pages/q/index.md"]


@pytest.mark.parametrize(("raw", "expected"), [
    ("../../x.png", "x.png"),
    ("..\\..\\x.png", "x.png"),
    ("..", "fallback"),
    (".env", "env"),
    ("_config.yml", "config.yml"),
    ("a/b\\c", "a-b-c"),
    ("tab\tand\x7fdel", "tab-and-del"),
    ("line\nbreak", "line-break"),
    ("photo (1) #2 %20.JPG", "photo-1-2-20.jpg"),
    ("CON.png", "CON-.png"),
    ("", "fallback"),
    ("...", "fallback"),
    ("名前.png", "名前.png"),
])
def test_safe_name(raw: str, expected: str) -> None:
    assert safe_name(raw, "fallback", keep_extension=True) == expected


def test_safe_name_caps_utf8_length_and_keeps_extension() -> None:
    name = safe_name("é" * 200 + ".jpeg", "f", keep_extension=True)
    assert name.endswith(".jpeg") and len(name.encode()) <= 120 and set(name[:-5]) == {"é"}


def test_report_json_shape(tmp_path: Path) -> None:
    report = convert_wxr(wxr("https://h.example", item(1, "post", "trash", title="t")), tmp_path / "r")
    assert isinstance(report, ImportReport)
    assert report.to_json() == {"posts": 0, "pages": 0, "drafts": 0, "attachments": 0, "attachmentsDownloaded": 0,
                                "attachmentsFailed": 0, "skipped": 1, "skippedReasons": {"status:trash": 1},
                                "withheld": 0, "commentsSkipped": 0,
                                "issues": [], "files": []}


def test_unpublished_statuses_become_drafts(tmp_path: Path) -> None:
    items = [item(n, post_type, status, title=status, slug=f"s{n}", content=f"<p>{status}</p>")
             for n, (post_type, status) in enumerate([("post", "pending"), ("post", "private"), ("post", "future"),
                                                      ("page", "draft"), ("post", "auto-draft"),
                                                      ("post", "inherit")], start=1)]
    report = convert_wxr(wxr("https://harbour.example", "\n".join(items)), tmp_path / "repo", fetch_media=False)
    # a private post is not a draft: it is not written at all (see test_private_and_password_posts_are_withheld)
    assert (report.posts, report.pages, report.drafts, report.skipped) == (0, 0, 4, 2)
    assert report.skipped_reasons == {"status:auto-draft": 1, "private": 1}
    # drafts keep their slug
    assert report.files == ["pages/_drafts/s4/index.md", "posts/_drafts/s1/index.md",
                            "posts/_drafts/s3/index.md", "posts/_drafts/s6/index.md"]
    for rel in report.files:
        fm, _ = read(tmp_path / "repo", rel)
        assert fm["draft"] is True


# ------------------------------------------------------------------------------------------------ issue 13 cases


@pytest.mark.parametrize(("html", "expected"), [
    # <br> in preformatted text, verse and inline code is a newline, never a trailing backslash
    ("<pre>a<br>b<br/>c</pre>", "```\na\nb\nc\n```"),
    ('<pre class="wp-block-verse">line one<br>line two</pre>', "```\nline one\nline two\n```"),
    ("<p>run <code>a<br>b</code></p>", "run `a\nb`"),
    # a `|` in a cell is escaped, so the table stays a table
    ("<table><tr><th>a|b</th><th>c</th></tr><tr><td>1</td><td>x|y</td></tr></table>",
     "| a\\|b | c |\n| --- | --- |\n| 1 | x\\|y |"),
    # a bare URL becomes an autolink: its underscores are not escaped
    ("<p>see https://ex.org/a_b_c now.</p>", "see <https://ex.org/a_b_c> now."),
    ('<audio controls src="https://h.example/x.mp3"></audio>', "[Audio: x.mp3](https://h.example/x.mp3)"),
    ('<video controls><source src="https://h.example/clip.mov" type="video/quicktime"></video>',
     "[Video: clip.mov](https://h.example/clip.mov)"),
    ('<p>H<sub>2</sub>O, E=mc<sup>2</sup>, <u>u</u>, <ins>new</ins>, <abbr title="World Wide Web">WWW</abbr></p>',
     'H<sub>2</sub>O, E=mc<sup>2</sup>, <u>u</u>, <ins>new</ins>, <abbr title="World Wide Web">WWW</abbr>'),
    ("<dl>\n<dt>Term</dt>\n<dd>Its definition</dd>\n</dl>", "<dl> <dt>Term</dt> <dd>Its definition</dd> </dl>"),
    ("<address>1 Harbour Road\nPortsmouth<br>England</address>", "1 Harbour Road\\\nPortsmouth\\\nEngland"),
    # each image of a gallery keeps its own caption, emphasised once; the gallery's caption follows
    ('<figure class="wp-block-gallery"><figure class="wp-block-image"><img src="a.jpg" alt=""/>'
     '<figcaption>Cap A</figcaption></figure><figure class="wp-block-image"><img src="b.jpg" alt=""/>'
     '<figcaption><em>Cap B</em></figcaption></figure><figcaption>All of them</figcaption></figure>',
     "![Cap A](a.jpg)\n\n*Cap A*\n\n![Cap B](b.jpg)\n\n*Cap B*\n\n*All of them*"),
])
def test_html_cases_of_the_theme_unit_test(html: str, expected: str) -> None:
    assert html_to_markdown(f"<!-- wp:html -->{html}<!-- /wp:html -->")[0] == expected


def test_html_with_pipes_and_inline_tags_renders_as_intended() -> None:
    resolver = Resolver([], {}, UrlScheme("/_repo/notes", "/_repo/medias"))
    table, _ = html_to_markdown("<table><tr><th>a|b</th></tr><tr><td>x|y</td></tr></table>")
    html = render_post(table, "t.md", resolver).html
    assert "<table>" in html and "a|b" in html and "x|y" in html
    inline, _ = html_to_markdown("<p>H<sub>2</sub>O at https://ex.org/a_b</p>")
    html = render_post(inline, "t.md", resolver).html
    assert "H<sub>2</sub>O" in html and 'href="https://ex.org/a_b"' in html


def _site(tmp_path: Path, items: list[str],
          channel_categories: tuple[tuple[str, str, str], ...] = ()) -> tuple[ImportReport, Path]:
    dest = tmp_path / "repo"
    report = convert_wxr(wxr("https://harbour.example", "\n".join(items), channel_categories=channel_categories),
                         dest, fetch_media=False)
    return report, dest


def test_private_and_password_posts_are_withheld(tmp_path: Path) -> None:
    report, dest = _site(tmp_path, [
        item(1, "post", "publish", title="Open", slug="open", content="<p>for everyone</p>"),
        item(2, "post", "private", title="Secret", slug="secret", content="<p>private words</p>"),
        item(3, "post", "publish", title="Locked", slug="locked", content="<p>password words</p>",
             password="enter"),
        item(4, "page", "private", title="Private page", slug="private-page", content="<p>hidden</p>"),
    ])
    assert report.files == ["posts/open/index.md"]
    assert report.withheld == 3 and report.skipped_reasons == {"private": 2, "password-protected": 1}
    assert sorted((i.path, i.kind) for i in report.issues) == [
        ("page:4", "withheld"), ("post:2", "withheld"), ("post:3", "withheld")]
    everything = b"".join(tree(dest).values())
    assert b"private words" not in everything and b"password words" not in everything


def test_structure_titles_slugs_and_links_between_posts(tmp_path: Path) -> None:
    report, dest = _site(tmp_path, [
        item(1, "page", "publish", title="Parent", slug="parent-page"),
        item(2, "page", "publish", title="Child", slug="child-page", parent=1,
             content='<p>Up to <a href="https://harbour.example/?page_id=1">the parent</a>.</p>'),
        item(3, "post", "publish", title="", slug="no-title-here", sticky=True,
             categories=(("category", "child-2", "Child 2"), ("post_format", "post-format-aside", "Aside")),
             content='<p>See <a href="https://harbour.example/2030/scheduled/">later</a> and '
                     '<a href="https://harbour.example/?p=5">the other</a>.</p>',
             comments=2),
        item(4, "post", "future", title="Scheduled", slug="scheduled", date_gmt="2030-01-01 10:00:00",
             link="https://harbour.example/2030/scheduled/"),
        item(5, "post", "publish", title="Other", slug="other"),
    ], channel_categories=(("parent", "Parent", ""), ("child-1", "Child 1", "parent"),
                           ("child-2", "Child 2", "child-1")))
    fm, _ = read(dest, "pages/child-page/index.md")
    assert fm["parent"] == "parent-page"
    fm, body = read(dest, "posts/no-title-here/index.md")
    assert fm["title"] == "No title here"
    assert fm["categories"] == ["Child 2"] and fm["categoryPaths"] == ["Parent/Child 1/Child 2"]
    assert fm["sticky"] is True and fm["format"] == "aside"
    # a link to a draft keeps its URL: the draft is not in the bundle (unless includeDrafts)
    assert body.strip() == ("See [later](https://harbour.example/2030/scheduled/) and "
                            "[the other](../other/index.md).")
    fm, _ = read(dest, "posts/_drafts/scheduled/index.md")
    assert fm["draft"] is True and fm["date"].startswith("2030-01-01")
    _, body = read(dest, "pages/child-page/index.md")
    assert body.strip() == "Up to [the parent](../parent-page/index.md)."
    assert report.comments_skipped == 2


def test_one_failed_url_used_many_times_is_one_issue(tmp_path: Path, server: MediaServer) -> None:
    gone = f"{server.base}/wp-content/uploads/gone.png"
    content = "".join(f'<p><img src="{gone}" alt="n{n}"/></p>' for n in range(9))
    report = convert_wxr(wxr(server.base, item(1, "post", "publish", title="T", slug="t", content=content)),
                         tmp_path / "repo", policy=LOCAL_POLICY)
    assert [i.path for i in report.issues] == ["posts/t/index.md"]
    assert report.attachments_failed == 1


def test_a_link_to_the_home_page_is_not_taken_for_a_post(tmp_path: Path) -> None:
    report, dest = _site(tmp_path, [
        item(1, "post", "publish", title="A", slug="a", content='<p><a href="https://harbour.example/">home</a></p>'),
        item(2, "post", "publish", title="B", slug="b"),
    ])
    _, body = read(dest, "posts/a/index.md")
    assert body.strip() == "[home](https://harbour.example/)"
