"""Small sites in the conventions of Zola, Hugo and Jekyll, built by the tests that read them.

The Zola blog is a git repository whose commits carry chosen author dates, with a side branch merged back,
so the dates a history gives each file are known exactly (ZOLA_DATES).
"""

from __future__ import annotations

from pathlib import Path

from dulwich.index import commit_tree
from dulwich.objects import Blob, Commit, ObjectID
from dulwich.refs import Ref
from dulwich.repo import Repo

from pipeline.timestamps import iso

# 2022-10-01 … 2022-10-05, one day apart, at noon UTC
T1, T2, T3, T4, T5 = (1_664_625_600 + day * 86_400 for day in range(5))
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
       b"\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7V\xbd\xfa\x00\x00\x00\x00IEND\xaeB`\x82")

ZOLA_V1: dict[str, bytes] = {
    "config.toml": b'base_url = "https://blog.example.org/blog"\n',
    "content/_index.md": b'+++\ntitle = "Home"\n+++\nWelcome.\n',
    "content/blog/_index.md": b'+++\ntitle = "Blog"\nsort_by = "date"\n+++\n',
    "content/inside-rust/_index.md": b'+++\ntitle = "Inside Rust"\n+++\n',
    "content/blog/gats.md": (
        b'+++\ntitle = "GATs are stable"\npath = "2022/10/28/gats-stabilization"\n+++\n\n'
        b"See [the details](@/inside-rust/foo.md#the-plan) and {{ youtube(id=\"abc123\") }} the video.\n\n"
        b"## Why\n\nBecause.\n"),
    "content/inside-rust/foo.md": (
        b'+++\ntitle = "Foo"\naliases = ["/inside-rust/old-foo/"]\n+++\n\n## The plan\n\n'
        b"Back to [GATs](/blog/2022/10/28/gats-stabilization/), the [section](@/blog/_index.md) and "
        b"[nowhere](@/inside-rust/missing.md).\n"),
}
ZOLA_V2: dict[str, bytes] = {
    "content/blog/2020-01-31-dated.md": (
        b'+++\ntitle = "Dated by name"\n+++\n\n![pic](pic.png) An [old link](/inside-rust/old-foo/).\n'),
    "content/blog/pic.png": PNG,
    "content/blog/explicit.md": b'+++\ntitle = "Explicit"\ndate = 2021-05-05\n+++\n\nDated in frontmatter.\n',
    "content/blog/wip.md": b'+++\ntitle = "Work in progress"\ndraft = true\n+++\n\nNot yet.\n',
}
ZOLA_V3 = {"content/inside-rust/foo.md": ZOLA_V1["content/inside-rust/foo.md"] + b"\nEdited later.\n"}
ZOLA_SIDE = {"content/blog/gats.md": ZOLA_V1["content/blog/gats.md"] + b"\nA fix from a branch.\n"}

# path → (gitCreated, gitModified): gats.md last changed on the side branch, not by the merge (T5)
ZOLA_DATES: dict[str, tuple[str, str]] = {
    "content/_index.md": (iso(T1), iso(T1)),
    "content/blog/_index.md": (iso(T1), iso(T1)),
    "content/inside-rust/_index.md": (iso(T1), iso(T1)),
    "content/blog/gats.md": (iso(T1), iso(T4)),
    "content/inside-rust/foo.md": (iso(T1), iso(T3)),
    "content/blog/2020-01-31-dated.md": (iso(T2), iso(T2)),
    "content/blog/explicit.md": (iso(T2), iso(T2)),
    "content/blog/pic.png": (iso(T2), iso(T2)),
}


def _commit(repo: Repo, files: dict[str, bytes], parents: list[bytes], when: int, message: str) -> bytes:
    blobs = []
    for path, data in sorted(files.items()):
        blob = Blob.from_string(data)
        repo.object_store.add_object(blob)
        blobs.append((path.encode(), blob.id, 0o100644))
    c = Commit()
    c.tree = commit_tree(repo.object_store, blobs)
    c.parents = [ObjectID(p) for p in parents]
    c.author = c.committer = b"Site Author <author@example.org>"
    c.author_time = c.commit_time = when
    c.author_timezone = c.commit_timezone = 0
    c.message = message.encode()
    repo.object_store.add_object(c)
    return c.id


def zola_blog(path: Path) -> Path:
    """main: T1 posts and sections, T2 more posts and an image, T3 an edit; a branch from T2 edits gats.md at
    T4 and is merged at T5 (the merge's tree is main's with the branch's gats.md)."""
    path.mkdir(parents=True)
    with Repo.init(str(path)) as repo:
        repo.refs.set_symbolic_ref(Ref(b"HEAD"), Ref(b"refs/heads/main"))
        v1 = dict(ZOLA_V1)
        c1 = _commit(repo, v1, [], T1, "first posts")
        v2 = {**v1, **ZOLA_V2}
        c2 = _commit(repo, v2, [c1], T2, "more posts")
        v3 = {**v2, **ZOLA_V3}
        c3 = _commit(repo, v3, [c2], T3, "edit foo")
        side = _commit(repo, {**v2, **ZOLA_SIDE}, [c2], T4, "fix gats")
        merge = _commit(repo, {**v3, **ZOLA_SIDE}, [c3, side], T5, "merge the fix")
        repo.refs[Ref(b"refs/heads/main")] = ObjectID(merge)
    return path


HUGO: dict[str, bytes] = {
    "config.toml": b'baseURL = "https://hugo.example.org/"\n',
    "content/posts/_index.md": b"---\ntitle: Posts\n---\n",
    "content/posts/first.md": b"---\ntitle: First\ndate: 2023-03-01\ndraft: false\n---\n\n## Sec\n\nHello.\n",
    "content/posts/second/index.md": (
        b'---\ntitle: Second\npublishDate: 2023-03-02\nurl: /custom/second/\n---\n\n'
        b'[a]({{< ref "first.md" >}}) [b]({{< relref "/posts/first" >}}#sec) [c]({{< ref "nothing.md" >}})\n\n'
        b'{{< figure src="cat.png" caption="A cat" >}}\n\nPlain words.\n\n'
        b'```\n[kept]({{< ref "first.md" >}})\n```\n'),
    "content/posts/third.md": (
        b"---\ntitle: Third\n---\n\nSee [second](/custom/second/) and [bundle]({{< ref \"second\" >}}).\n"
        b"[abs](https://Hugo.example.org/posts/first/#sec) [gone](https://hugo.example.org/posts/gone/) "
        b"[other](https://elsewhere.example.org/posts/first/)\n"
        b"{{<youtube id=\"x\">}} and {{% notice %}}inside{{% /notice %}}.\n"),
    "content/posts/draft.md": b"---\ntitle: Draft\ndraft: true\n---\n\nSecret.\n",
}

JEKYLL: dict[str, bytes] = {
    "_config.yml": b"permalink: pretty\n",
    "_posts/2010-07-21-name.md": b"---\ntitle: Name\n---\n\nThe first post.\n",
    "_posts/2011-01-02-other.md": (
        b"---\ntitle: Other\ndate: 2011-01-02 10:00:00 +0000\n---\n\n"
        b"[x]({% post_url 2010-07-21-name %}) [y]({{ site.baseurl }}{% link _posts/2010-07-21-name.md %}) "
        b"[z](/2010/07/21/name/) [p](../about/) [q]({% post_url 1999-01-01-missing %})\n\n"
        b"[ref]: {% post_url 2010-07-21-name %}\n\nUse [ref] and {% include note.html %} here.\n"),
    "_posts/2012-01-01-unpublished.md": b"---\ntitle: Unpublished\npublished: false\n---\n\nNo.\n",
    "_drafts/wip.md": b"---\ntitle: WIP\n---\n\nSoon.\n",
    "about.md": b"---\ntitle: About\npermalink: /about/\n---\n\nAbout us: [latest](/2011/01/02/other.html).\n",
}


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root
