"""Pure tests of the markdown library behind the parse stage: no store, no context."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ItemError
from pipeline.markdown.discovery import discover
from pipeline.markdown.frontmatter import split_frontmatter
from pipeline.markdown.hashing import post_hash
from pipeline.markdown.links import Resolver
from pipeline.markdown.media import svg_size
from pipeline.markdown.plain import count_words, plain_text
from pipeline.markdown.render import Problem, parse_tokens, render_post
from pipeline.markdown.slugs import UniqueIds, assign_slugs, desired_slug, slugify
from pipeline.markdown.urls import UrlScheme, media_url

pytestmark = pytest.mark.timeout(30)

H = "a" * 64


def resolver(domain: str | None = None) -> Resolver:
    posts = [
        {"path": "intro.md", "slug": "intro", "fileName": "intro", "title": "Introduction"},
        {"path": "guides/setup.md", "slug": "setup", "fileName": "setup", "title": "Setting up"},
        {"path": "notes/setup.md", "slug": "setup-2", "fileName": "setup", "title": "Desk"},
        {"path": "notes/idea.md", "slug": "idea", "fileName": "idea", "title": "Idea"},
    ]
    medias: dict[str, dict[str, Any]] = {"img/cat.png": {"hash": H, "ext": "png", "width": 640, "height": 480},
              "notes/pic.JPG": {"hash": "b" * 64, "ext": "jpg", "width": None, "height": None}}
    return Resolver(posts, medias, UrlScheme("/_repo/notes", "/_repo/medias", domain))


# -- slugs ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "slug"), [
    ("Hello World!", "hello-world"),
    ("Café déjà vu", "cafe-deja-vu"),
    ("It's  a_b -- c", "its-a-b-c"),
    ("中文 标题", "中文-标题"),
    ("  ", ""),
])
def test_slugify(text: str, slug: str) -> None:
    assert slugify(text) == slug


def test_desired_slug_index_and_frontmatter() -> None:
    assert desired_slug("guides/index.md", None) == "guides"
    assert desired_slug("index.md", None) == "index"
    assert desired_slug("a/My Post.md", None) == "my-post"
    assert desired_slug("a/My Post.md", "Keep/This Verbatim") == "Keep/This Verbatim"
    assert desired_slug("a/x.md", 2024) == "2024"
    assert desired_slug("a/x.md", True) == "x"


def test_assign_slugs_collisions_are_deterministic() -> None:
    posts = [("b/guide.md", None), ("guide.md", None), ("a/guide.md", None), ("z/other.md", "guide"),
             ("c/guide.md", None)]
    first = assign_slugs(posts)
    assert assign_slugs(list(reversed(posts))) == first
    # An explicit frontmatter slug wins; then shallower paths, then path order.
    assert first["z/other.md"].final == "guide"
    assert [first[p].final for p in ("guide.md", "a/guide.md", "b/guide.md", "c/guide.md")] == \
        ["guide-2", "guide-3", "guide-4", "guide-5"]
    assert first["a/guide.md"].to_json() == {"desiredSlug": "guide", "disambiguatedSlug": "guide-3",
                                             "finalSlug": "guide-3", "isDisambiguated": True}
    assert first["z/other.md"].to_json()["isDisambiguated"] is False


def test_assign_slugs_skips_taken_suffixes() -> None:
    slugs = assign_slugs([("a.md", "x"), ("b.md", "x-2"), ("c.md", "x")])
    assert (slugs["a.md"].final, slugs["b.md"].final, slugs["c.md"].final) == ("x", "x-2", "x-3")


def test_heading_ids_repeat() -> None:
    ids = UniqueIds()
    assert [ids.make(t) for t in ("Intro", "Intro", "intro!", "")] == ["intro", "intro-2", "intro-3", "section"]


# -- frontmatter ------------------------------------------------------------------------------------------

def test_yaml_frontmatter_dates_become_iso_recursively() -> None:
    text = "---\ntitle: Hi\ndate: 2024-01-05\nwhen: 2024-01-05 10:30:00\nlog:\n  - at: 2023-12-31\n---\nBody\n"
    fm, body = split_frontmatter(text, "p.md")
    assert fm == {"title": "Hi", "date": "2024-01-05", "when": "2024-01-05T10:30:00",
                  "log": [{"at": "2023-12-31"}]}
    assert body == "Body\n"


def test_toml_frontmatter() -> None:
    text = '+++\ntitle = "T"\ndate = 2024-02-20T18:00:00Z\n[extra]\nday = 2024-02-01\n+++\n\nBody'
    fm, body = split_frontmatter(text, "p.md")
    assert fm == {"title": "T", "date": "2024-02-20T18:00:00+00:00", "extra": {"day": "2024-02-01"}}
    assert body.strip() == "Body"


def test_no_or_empty_frontmatter() -> None:
    assert split_frontmatter("# Title\n\ntext", "p.md") == ({}, "# Title\n\ntext")
    assert split_frontmatter("---\n---\nBody", "p.md") == ({}, "Body")
    assert split_frontmatter("\ufeff---\na: 1\n---\nB", "p.md") == ({"a": 1}, "B")


@pytest.mark.parametrize(("text", "reason"), [
    ("---\ntitle: [unclosed\n---\nx", "invalid YAML frontmatter"),
    ("---\n- a\n- b\n---\nx", "frontmatter is a list, not a mapping"),
    ("+++\ntitle = \n+++\nx", "invalid TOML frontmatter"),
])
def test_bad_frontmatter_is_an_item_error(text: str, reason: str) -> None:
    with pytest.raises(ItemError) as err:
        split_frontmatter(text, "posts/bad.md")
    assert err.value.path == "posts/bad.md"
    assert reason in err.value.reason


# -- links, images, headings -------------------------------------------------------------------------------

def test_wiki_links_alias_heading_and_embeds() -> None:
    out = render_post("[[Introduction]] [[setup|the setup]] [[intro#Getting Started]] [[#Local]] "
                      "![[cat.png]] ![[idea]]", "guides/page.md", resolver())
    assert '<a href="/_repo/notes/intro">Introduction</a>' in out.html
    # The same folder wins when two files share a name.
    assert '<a href="/_repo/notes/setup">the setup</a>' in out.html
    assert '<a href="/_repo/notes/intro#getting-started">intro#Getting Started</a>' in out.html
    assert '<a href="#local">#Local</a>' in out.html
    assert f'<img src="/_repo/medias/{H}.png" alt="cat.png" width="640" height="480" loading="lazy" />' in out.html
    assert '<a href="/_repo/notes/idea">idea</a>' in out.html
    assert out.post_links == ["intro.md", "guides/setup.md", "notes/idea.md"]
    assert out.media_used == ["img/cat.png"]
    assert out.problems == []


def test_markdown_links_relative_absolute_and_external() -> None:
    md = ("[a](../intro.md#top) [b](/notes/idea.md) [c](setup.md) [d](https://example.org/x.md) "
          "[e](#here) [f](mailto:a@b.c) [g](../img/cat.png) [h](other.html)")
    out = render_post(md, "notes/page.md", resolver())
    for href in ("/_repo/notes/intro#top", "/_repo/notes/idea", "/_repo/notes/setup-2",
                 "https://example.org/x.md", "#here", "mailto:a@b.c", f"/_repo/medias/{H}.png", "other.html"):
        assert f'href="{href}"' in out.html
    # other.html may be a page of the site: kept as written, reported as naming no post
    assert out.problems == [Problem("link names no post: other.html", "info", "unresolved-link")]


def test_images_relative_absolute_case_insensitive_and_external() -> None:
    out = render_post("![x](../img/cat.png) ![y](/img/cat.png) ![z](pic.jpg) ![w](https://e.org/a.png)",
                      "notes/page.md", resolver())
    assert out.html.count(f'src="/_repo/medias/{H}.png"') == 2
    assert f'src="/_repo/medias/{"b" * 64}.jpg" alt="z" loading="lazy"' in out.html
    assert '<img src="https://e.org/a.png" alt="w" loading="lazy" />' in out.html
    assert out.first_image == f"/_repo/medias/{H}.png"


def test_broken_links_are_marked_and_reported() -> None:
    out = render_post("[[Nowhere]] [x](missing.md) ![y](gone.png) ![[lost.png]] [z](../../outside.md) "
                      "![[No note]]", "notes/page.md", resolver())
    for name in ("Nowhere", "missing.md", "gone.png", "lost.png", "../../outside.md"):
        assert f"#broken-link:{name}" in out.html
    assert '<a href="#broken-link:No note">No note</a>' in out.html
    assert [p.message for p in out.problems] == [
        "broken link: Nowhere", "broken link: missing.md", "broken image: gone.png", "broken image: lost.png",
        "broken link: ../../outside.md", "broken link: No note"]
    assert {p.severity for p in out.problems} == {"warning"}
    assert out.first_image is None


def test_domain_makes_urls_absolute() -> None:
    out = render_post("[[intro]] ![c](/img/cat.png)", "x.md", resolver(domain="docs.example.org"))
    assert 'href="https://docs.example.org/_repo/notes/intro"' in out.html
    assert f'src="https://docs.example.org/_repo/medias/{H}.png"' in out.html
    assert media_url(H, "PNG", "/m/", "http://h:8080/") == f"http://h:8080/m/{H}.png"
    # a resized raster is linked as its lg webp variant (CONTRACT §3)
    assert media_url(H, "PNG", "/m", None, resized=True) == f"/m/{H}-lg.webp"


def test_headings_toc_and_raw_html() -> None:
    out = render_post('# Top\n\n## Part *one*\n\n## Part one\n\n<aside markdown="1">\n**raw**\n</aside>\n',
                      "x.md", resolver())
    assert out.toc == [{"id": "top", "title": "Top", "depth": 1},
                       {"id": "part-one", "title": "Part one", "depth": 2},
                       {"id": "part-one-2", "title": "Part one", "depth": 2}]
    assert '<h2 id="part-one-2">Part one</h2>' in out.html
    assert '<aside markdown="1">\n**raw**\n</aside>' in out.html


def test_code_is_not_parsed_for_links() -> None:
    out = render_post("`[[Nowhere]]`\n\n```\n[[Nowhere]] ![x](gone.png)\n```\n", "x.md", resolver())
    assert out.problems == []


# -- plain text, media, hashing ----------------------------------------------------------------------------

def test_plain_text() -> None:
    md = ("# Title\n\n![img](x.png) First *para*\nwraps [link](y).\n\n- one\n- two\n\n"
          "```py\nprint(1)\n```\n\n> quoted\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    plain = plain_text(parse_tokens(md))
    assert plain.text == "Title\n\nFirst para wraps link.\n\none\ntwo\n\nprint(1)\n\nquoted\n\na\tb\n1\t2"
    assert plain.first_paragraph == "First para wraps link."
    assert count_words("Hello, world's end — 3.14 中文字") == 7
    # a CJK character ends a Latin word and counts on its own, also between letters and connectors
    assert count_words("abc中def x'中 y-z 한국어_snake_case ж.б") == 11


def test_word_count_is_the_lookahead_formulation() -> None:
    # The word pattern is written as one character class for speed; these are the counts of the slower
    # `(?:(?!CJK)\w)+` spelling it replaced, on text that mixes every kind of character it treats apart.
    from pipeline.markdown.plain import _CJK

    slow = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])\w)+(?:['’.-](?:(?![{_CJK}])\w)+)*")
    alphabet = "ab1_ 'é’.-日本語한국어\u3041\u00a0\t\nж٣"
    rng = random.Random(7)
    for _ in range(50):
        text = "".join(rng.choice(alphabet) for _ in range(400))
        assert count_words(text) == len(slow.findall(text)), text


def test_svg_size(tmp_path: Path) -> None:
    cases = {'<svg width="120px" height="80">': (120, 80), '<svg viewBox="0 0 300 150">': (300, 150),
             '<svg width="600" viewBox="0,0,300,150">': (600, 300), '<svg width="100%" height="50%">': (None, None),
             "<html/>": (None, None)}
    for i, (tag, size) in enumerate(cases.items()):
        (tmp_path / f"{i}.svg").write_text(f'<?xml version="1.0"?>\n{tag}</svg>')
        assert svg_size(tmp_path / f"{i}.svg") == size, tag


def test_post_hash_is_canonical_json() -> None:
    entry = {"fileName": "a", "slug": "a", "title": "Été", "frontmatter": {"z": 1, "a": [1, {"y": 2, "b": 3}]},
             "originalFilePath": "a.md", "html": "<p>x</p>", "url": "/_repo/notes/a", "plain": "ignored"}
    canonical = ('{"fileName":"a","frontmatter":{"a":[1,{"b":3,"y":2}],"z":1},"html":"<p>x</p>",'
                 '"originalFilePath":"a.md","slug":"a","title":"Été","url":"/_repo/notes/a"}')
    assert post_hash(entry) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert json.loads(canonical)["title"] == "Été"


# -- discovery ---------------------------------------------------------------------------------------------

def test_discovery_exclusions(tmp_path: Path) -> None:
    files = ["a.md", "README.md", "docs/readme.MD", "CONTRIBUTING.md", "License.md", "x.tmp.md", "keep.tmp.md",
             "node_modules/p/a.md", "dist/a.md", "sub/build/a.md", ".hidden/a.md", "sub/.h.md", "sub/ok.md",
             "private/a.md", "private/a.png", "img/A.PNG", "img/clip.webm", "img/notes.txt", "img/._A.png"]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / ".repoignore").write_text("# comment\n*.tmp.md\n!keep.tmp.md\n/private/\n")
    found = discover(tmp_path)
    assert found.posts == ["a.md", "keep.tmp.md", "sub/ok.md"]
    assert found.medias == ["img/A.PNG", "img/clip.webm"]


def test_wiki_link_to_media_and_prose_in_frontmatter() -> None:
    r = resolver()
    assert r.wiki("cat.png", "x.md").media == "img/cat.png"
    assert r.frontmatter_value("see logo.png", "x.md") is None
    assert r.frontmatter_value("/img/cat.png", "x.md") is not None
    assert r.frontmatter_value("![[cat.png]]", "x.md") is not None
