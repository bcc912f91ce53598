"""Tier 1: one bad value in a repository is one issue naming its file, and the rest of the job goes on.

Frontmatter the YAML and TOML libraries refuse to convert, aliases that expand without end, slugs longer than
a file name or path may be, and git tree entries no file system can hold: each on real files, through the
parse, publish and fetch stages run in-process.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.errors import ItemError
from pipeline.markdown.frontmatter import split_frontmatter
from pipeline.markdown.slugs import SEGMENT_MAX_BYTES, SLUG_MAX_BYTES, assign_slugs, bounded_slug
from pipeline.models import SourceSpec
from pipeline.stages import fetch, parse
from pipeline.stages.context import run_to_end
from tests.fakes.gitserver import commit_raw_tree
from tests.stages.test_embed_images import make_settings, run_job
from tests.stages.test_fetch import ctx_for, tree
from tests.stages.test_parse import DEMO, make_ctx, result

pytestmark = pytest.mark.timeout(120)


def alias_bomb(levels: int = 6, fan: int = 9) -> str:
    """`levels` lists of `fan` aliases of the list before: a few hundred bytes, fan**levels strings."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * fan)}]"]
    for n in range(1, levels):
        lines.append(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * fan)}]")
    return "\n".join(lines)


# file → (frontmatter text, words the issue must say)
HOSTILE: dict[str, tuple[str, str]] = {
    "impossible-date.md": ("---\ntitle: Leap\ndate: 2024-02-30\n---\n", "day is out of range for month"),
    "bad-time.md": ("---\ndate: 2024-01-01 25:61:00\n---\n", "hour must be in 0..23"),
    "year-zero.md": ("---\ndate: 0000-01-01\n---\n", "year 0 is out of range"),
    "huge-int.md": ("---\nviews: " + "9" * 5000 + "\n---\n", "4300 digits"),
    "hex-int.md": ("---\nid: 0x" + "f" * 20_000 + "\n---\n", "more than 4,000 digits"),
    "bad-float.md": ("---\nratio: !!float abc\n---\n", "'abc' is not a valid float"),
    "bad-bool.md": ("---\ndraft: !!bool maybe\n---\n", "'maybe' is not a valid bool"),
    "bad-timestamp.md": ("---\nat: !!timestamp soon\n---\n", "'soon' is not a valid timestamp"),
    "bad-offset.md": ("---\nat: 2024-01-01T10:00:00+99:00\n---\n", "is not a valid timestamp"),
    "toml-huge-int.md": ("+++\nviews = " + "9" * 5000 + "\n+++\n", "4300 digits"),
    "toml-deep.md": ("+++\nx = " + "[" * 3000 + "]" * 3000 + "\n+++\n", "nested too deeply"),
    "toml-nested-150.md": ("+++\nx = " + "[" * 150 + "]" * 150 + "\n+++\n", "nested more than 100 levels"),
    "alias-bomb.md": ("---\n" + alias_bomb() + "\n---\n", "aliases repeating aliases"),
    "self-alias.md": ("---\nloop: &a [*a]\n---\n", "an alias contains itself"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_value_that_does_not_convert_is_an_item_error_naming_the_file(name: str) -> None:
    text, words = HOSTILE[name]
    with pytest.raises(ItemError) as raised:
        split_frontmatter(text + "Body\n", f"posts/{name}")
    assert raised.value.path == f"posts/{name}"
    assert words in raised.value.reason
    assert len(raised.value.reason) < 400  # names the problem, never echoes the 20,000-digit value


def test_the_alias_bomb_is_small_and_would_expand_to_half_a_million_values() -> None:
    assert len(alias_bomb().encode()) < 400 and 9 ** 6 == 531_441


def test_ordinary_anchors_and_merge_keys_still_expand() -> None:
    text = "---\ndefaults: &d {layout: post, comments: true}\npost: {<<: *d, title: Hi}\nsame: *d\n---\n"
    fm, _ = split_frontmatter(text, "p.md")
    assert fm["post"] == {"layout": "post", "comments": True, "title": "Hi"}
    assert fm["same"] == {"layout": "post", "comments": True}


def test_large_alias_free_frontmatter_is_never_refused() -> None:
    items = "\n".join(f"  - {{src: img/{n}.png, alt: picture number {n}}}" for n in range(20_000))
    fm, _ = split_frontmatter(f"---\ngallery:\n{items}\n---\n", "gallery.md")
    assert len(fm["gallery"]) == 20_000


def test_parse_records_one_issue_per_hostile_post_and_publishes_the_others(tmp_path: Path) -> None:
    src = tmp_path / "repo"
    shutil.copytree(DEMO, src)
    for name, (text, _) in HOSTILE.items():
        (src / "hostile").mkdir(exist_ok=True)
        (src / "hostile" / name).write_text(text + "Body\n", encoding="utf-8")
    ctx = make_ctx(tmp_path, src)
    summary = run_to_end(parse.run, ctx).summary
    assert summary["posts"] == 9  # the demo's posts, none of the hostile ones
    hostile = {f"hostile/{name}" for name in HOSTILE}
    for path in hostile:
        issues = [i for i in ctx.issues if i.path == path]
        assert [(i.severity, i.kind) for i in issues] == [("error", "parse-error")], (path, issues)
        assert HOSTILE[path.removeprefix("hostile/")][1] in issues[0].message
    posts = result(ctx, "posts.json")
    assert not hostile & {p["originalFilePath"] for p in posts}
    assert len(json.dumps(posts)) < 200_000  # nothing of the alias bomb was expanded into the bundle


def test_long_slugs_are_cut_stably_and_stay_unique() -> None:
    short = "a/readable-slug"
    assert bounded_slug(short) == short
    long = "/".join(["s" * 200] * 30)  # each segment fits a file name, the whole path does not
    cut = bounded_slug(long)
    assert cut == bounded_slug(long) and len(cut.encode()) <= SLUG_MAX_BYTES
    assert all(len(seg.encode()) <= SEGMENT_MAX_BYTES for seg in cut.split("/"))
    assert bounded_slug(long + "x") != cut  # differing only after the cut: still apart
    wide = "é" * 400  # 800 bytes in one segment, cut on a character boundary
    assert bounded_slug(wide).startswith("é" * 95) and len(bounded_slug(wide).encode()) <= SEGMENT_MAX_BYTES
    slugs = assign_slugs([("a.md", long), ("b.md", long), ("c.md", "fine")])
    assert slugs["a.md"].final == cut and slugs["b.md"].final == f"{cut}-2" and slugs["c.md"].final == "fine"
    assert slugs["a.md"].asked_bytes == len(long) and slugs["c.md"].asked_bytes is None
    assert slugs["a.md"].to_json() == {"desiredSlug": cut, "disambiguatedSlug": cut, "finalSlug": cut,
                                       "isDisambiguated": False}


def test_a_slug_longer_than_a_path_is_published_cut_with_one_issue(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    long = "/".join(["deep-folder-name-" + "x" * 180] * 25)  # 5,000 bytes: no file system takes that path
    (repo / "long.md").write_text(f"---\ntitle: Long\nslug: {long}\n---\nText\n", encoding="utf-8")
    (repo / "fine.md").write_text("---\ntitle: Fine\n---\nText\n", encoding="utf-8")
    job = run_job(repo, make_settings(tmp_path), "slug-job", skipEmbeddings=True)
    posts = {p["originalFilePath"]: p for p in json.loads((job.bundle / "posts.json").read_text())}
    assert set(posts) == {"long.md", "fine.md"}
    slug = posts["long.md"]["slug"]
    assert slug == bounded_slug(long) and len(slug.encode()) <= SLUG_MAX_BYTES
    assert json.loads((job.bundle / "_posts" / "slug" / f"{slug}.json").read_text())["title"] == "Long"
    assert (job.bundle / "_posts" / "slug" / "fine.json").is_file()
    issues = job.issues_of("long.md")
    assert len(issues) == 1 and issues[0][:3] == ("parse", "slug", "warning") and "too long" in issues[0][3]


def test_git_entries_no_file_system_takes_are_skipped_one_issue_each(tmp_path: Path) -> None:
    long_name = b"n" * 300 + b".md"
    files = {b"a.md": b"# A\n\nkept\n", long_name: b"# too long\n", b"docs/" + b"d" * 256: b"x",
             b"docs/b.md": b"# B\n", b".git/config": b"[core]\n", b"img/x.png": b"\x89PNG"}
    files[b"/".join([b"f"] * 120) + b"/deep.md"] = b"# deep\n"
    sha = commit_raw_tree(tmp_path / "origin", files)
    for n, source in enumerate([SourceSpec(url=(tmp_path / "origin").as_uri()),
                                SourceSpec(path=str(tmp_path / "origin"), commit=sha)]):
        ctx = ctx_for(tmp_path, source, job=f"j{n}")
        summary = fetch.run(ctx).summary
        assert summary["commit"] == sha
        got = sorted(p.relative_to(tree(ctx)).as_posix() for p in tree(ctx).rglob("*") if p.is_file())
        assert got == ["a.md", "docs/b.md", "img/x.png"]
        skipped = {i.path: i.message for i in ctx.issues}
        assert all(i.stage == "fetch" and i.kind == "checkout" and i.severity == "error" for i in ctx.issues)
        assert len(skipped) == 4
        assert skipped["n" * 200 + "…"].startswith("not checked out: a name of 303 bytes")
        assert "256 bytes" in skipped["docs/" + "d" * 195 + "…"]
        assert "not safe" in skipped[".git"]
        assert "nested more than 100 deep" in skipped["/".join(["f"] * 100)]
