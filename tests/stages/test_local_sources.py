"""Tier 1: paths on this machine that a job names are taken only under REPOBUILD_LOCAL_SOURCE_ROOTS, and no
symlink of a source is followed out of it (issue 9, "the server's own disk")."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from dulwich.index import commit_tree
from dulwich.objects import Blob
from dulwich.repo import Repo

from pipeline.errors import PermanentError
from pipeline.models import JobSpec, SourceSpec
from pipeline.settings import Settings
from pipeline.sources.local_roots import NOT_ALLOWED, existing_local, local_path_of, resolve_local
from pipeline.stages import build_db, enrich, fetch, source
from pipeline.stages.context import LocalContext
from pipeline.stores.artifacts import LocalArtifactStore
from tests.fakes.gitserver import AUTHOR
from tests.stages.test_embed_images import make_settings, run_job

SECRET = b"root:x:0:0:the host's own file\n"
ENV_MARK = "REPOBUILD_TEST_ENV_MARK"


def settings_for(tmp_path: Path, roots: tuple[str, ...]) -> Settings:
    return Settings(artifacts=str(tmp_path / "art"), output=str(tmp_path / "out"), temp_dir=str(tmp_path),
                    local_source_roots=roots)


def context(settings: Settings, stage: str, *, source: SourceSpec | None = None, task: str = "process-all",
            options: dict[str, Any] | None = None, job: str = "j") -> LocalContext:
    spec = JobSpec(job_id=job, task=task, source=source, options=options or {})
    return LocalContext(job_id=job, stage=stage, spec=spec, settings=settings,
                        artifacts=LocalArtifactStore(settings.artifacts))


@pytest.fixture
def disk(tmp_path: Path) -> dict[str, Path]:
    """An allowed root with a site in it, and beside it what must stay out of reach: a folder named like the
    root with a suffix, a secret file, a link from inside the root to outside."""
    root, outside = tmp_path / "srv" / "a", tmp_path / "srv" / "ab"
    for folder in (root / "site", outside / "site"):
        folder.mkdir(parents=True)
        (folder / "post.md").write_text("# Post\n\nhello\n")
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    return {"root": root, "site": root / "site", "outside": outside / "site", "secret": tmp_path / "secret.txt",
            "escape": root / "escape" / "site"}


# ------------------------------------------------------------------------------------------------ the path check


def test_only_paths_under_a_root_are_taken(disk: dict[str, Path]) -> None:
    roots = (str(disk["root"]),)
    assert resolve_local(str(disk["site"]), roots, "source") == disk["site"].resolve()
    # a missing folder under a root is still the root's business: the stage that reads it says it is missing
    assert resolve_local(str(disk["root"] / "not-yet"), roots, "source") == (disk["root"] / "not-yet").resolve()
    refused = [
        str(disk["outside"]),                      # /srv/ab is not under /srv/a
        str(disk["root"] / ".." / "ab" / "site"),  # nor is /srv/a/../ab
        str(disk["escape"]),                       # a link under the root leading out of it
        str(disk["secret"]),
        "/", "relative/path", "bad\0byte",
    ]
    for path in refused:
        with pytest.raises(PermanentError) as err:
            resolve_local(path, roots, "data.repoInfo.path")
        assert str(err.value) == f"data.repoInfo.path: {NOT_ALLOWED}"
    with pytest.raises(PermanentError, match="REPOBUILD_LOCAL_SOURCE_ROOTS is empty"):
        resolve_local(str(disk["site"]), (), "source")


def test_a_root_that_is_itself_a_link_is_taken_by_its_real_path(tmp_path: Path, disk: dict[str, Path]) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(disk["root"], target_is_directory=True)
    assert resolve_local(str(disk["site"]), (str(alias),), "source") == disk["site"].resolve()
    assert resolve_local(str(alias / "site"), (str(disk["root"]),), "source") == disk["site"].resolve()


def test_outside_the_roots_missing_unreadable_and_not_a_folder_read_the_same(tmp_path: Path,
                                                                              disk: dict[str, Path]) -> None:
    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    locked.chmod(0)
    try:
        answers = set()
        for path in (tmp_path / "missing", disk["secret"], locked / "inner", disk["outside"]):
            with pytest.raises(PermanentError) as err:
                existing_local(str(path), (str(disk["root"]),), "source", folder=True)
            answers.add(str(err.value))
        assert answers == {f"source: {NOT_ALLOWED}"}
    finally:
        locked.chmod(0o700)
    with pytest.raises(PermanentError, match="^source: does not exist$"):
        existing_local(str(disk["root"] / "not-yet"), (str(disk["root"]),), "source", folder=True)


def test_git_locations_that_name_this_machine() -> None:
    assert local_path_of("file:///srv/a/repo") == "/srv/a/repo"
    assert local_path_of("FILE:///srv/a/repo") == "/srv/a/repo"
    assert local_path_of("/srv/a/repo") == "/srv/a/repo"
    assert local_path_of("git@no-colon") == "git@no-colon"  # dulwich reads it as a path too
    for remote in ("https://host/r.git", "ssh://git@host/r.git", "git://host/r.git", "git@host:org/r.git",
                   "host:org/r.git"):
        assert local_path_of(remote) is None


def test_fetch_refuses_a_source_outside_the_roots_without_naming_the_path(tmp_path: Path,
                                                                          disk: dict[str, Path]) -> None:
    settings = settings_for(tmp_path, (str(disk["root"]),))
    for spec in (SourceSpec(path=str(disk["outside"])), SourceSpec(url=f"file://{disk['outside']}"),
                 SourceSpec(path=str(disk["escape"])), SourceSpec(path=str(disk["root"] / ".." / "ab" / "site"))):
        with pytest.raises(PermanentError) as err:
            fetch.run(context(settings, "fetch", source=spec))
        assert str(err.value) == f"source: {NOT_ALLOWED}"
    assert fetch.run(context(settings, "fetch", source=SourceSpec(path=str(disk["site"])), job="ok")).finished


def test_roots_taken_away_after_enqueue_are_enforced_by_the_stage(tmp_path: Path, disk: dict[str, Path]) -> None:
    """The worker checks with the settings it runs with: a job enqueued when the path was allowed gets nothing."""
    ctx = context(settings_for(tmp_path, ()), "fetch", source=SourceSpec(path=str(disk["site"])))
    with pytest.raises(PermanentError, match="REPOBUILD_LOCAL_SOURCE_ROOTS is empty"):
        fetch.run(ctx)


def test_build_database_and_enrich_never_touch_a_folder_outside_the_roots(tmp_path: Path,
                                                                          disk: dict[str, Path]) -> None:
    dist = disk["outside"].parent / "dist"
    dist.mkdir()
    (dist / "posts.json").write_text(json.dumps([{"hash": "h1", "wordCount": 10, "links": []}]))
    before = sorted(p.name for p in dist.iterdir())
    settings = settings_for(tmp_path, (str(disk["root"]),))
    for stage, task, run in (("build_db", "build-database", build_db.run), ("enrich", "enrich-data", enrich.run)):
        for options in ({"distFolder": str(dist)}, {"assets": {"distFolder": str(dist)}},
                        {"repoInfo": {"distPath": str(disk["root"] / ".." / "ab" / "dist")}}):
            with pytest.raises(PermanentError) as err:
                run(context(settings, stage, task=task, options=options))
            assert str(err.value) == f"distFolder: {NOT_ALLOWED}"
    assert sorted(p.name for p in dist.iterdir()) == before
    # under a root it is read and written as before
    inside = disk["root"] / "dist"
    inside.mkdir()
    (inside / "posts.json").write_bytes((dist / "posts.json").read_bytes())
    assert enrich.run(context(settings, "enrich", task="enrich-data", options={"distFolder": str(inside)})).finished
    assert (inside / "posts-similarity.json").exists()


def test_wp_import_refuses_an_export_file_outside_the_roots(tmp_path: Path, disk: dict[str, Path]) -> None:
    settings = settings_for(tmp_path, (str(disk["root"]),))
    for path in (disk["secret"], disk["root"] / ".." / ".." / "secret.txt", tmp_path / "missing.xml"):
        with pytest.raises(PermanentError) as err:
            source.run(context(settings, "source", task="wp-import", options={"xmlFilePath": str(path)}))
        assert str(err.value) == f"xmlFilePath: {NOT_ALLOWED}"


# ------------------------------------------------------------------------------------------------ symlinks


def hostile_links(folder: Path) -> None:
    """Every kind of link a hostile repository can hold, beside real content and one honest link."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    (folder / "real.md").write_text("# Real\n\nthe only post\n")
    (folder / "img" / "cat.png").write_bytes(b"\x89PNG cat")
    links = {"passwd.md": "/etc/passwd", "env.md": "/proc/self/environ", "up": "..", "loop": ".",
             "img/back": "..", "dangling.md": "nowhere.md", "a.md": "b.md", "b.md": "a.md",
             "sneaky.md": "img/../../outside.md", "alias.md": "./img/../real.md", "pics": "img"}
    for name, target in links.items():
        os.symlink(target, folder / name)


BAD = {"passwd.md", "env.md", "up", "loop", "img/back", "dangling.md", "a.md", "b.md", "sneaky.md"}


def commit_all(folder: Path) -> None:
    """Commit the folder as it is, links as links (`porcelain.add` would walk into a linked folder)."""
    entries = []
    with Repo.init(str(folder)) as repo:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            for name in [*filenames, *(d for d in dirnames if (Path(dirpath) / d).is_symlink())]:
                path = Path(dirpath) / name
                link = path.is_symlink()
                blob = Blob.from_string(os.readlink(path).encode() if link else path.read_bytes())
                repo.object_store.add_object(blob)
                entries.append((path.relative_to(folder).as_posix().encode(), blob.id, 0o120000 if link else 0o100644))
        tree = commit_tree(repo.object_store, entries)
        repo.get_worktree().commit(message=b"links", author=AUTHOR, committer=AUTHOR, tree=tree)


@pytest.mark.parametrize("kind", ["folder", "git"])
def test_no_symlink_is_followed_out_of_a_source(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MARK, "the worker's environment")  # what /proc/self/environ would publish
    folder = tmp_path / "root" / "site"
    hostile_links(folder)
    if kind == "git":
        commit_all(folder)
    ctx = context(settings_for(tmp_path, (str(tmp_path / "root"),)), "fetch", source=SourceSpec(path=str(folder)))
    assert fetch.run(ctx).finished  # the job goes on
    tree = ctx.artifacts.tree(ctx.key("tree"))  # type: ignore[attr-defined]
    everything = b"".join(p.read_bytes() for p in tree.rglob("*") if p.is_file())
    assert SECRET[:4] not in everything and b"root:" not in everything and ENV_MARK.encode() not in everything
    assert not any(p.name == "passwd.md" or p.name == "env.md" for p in tree.rglob("*"))
    # the links that stay lead inside the tree, directly
    kept = {p.relative_to(tree).as_posix(): os.readlink(p) for p in tree.rglob("*") if p.is_symlink()}
    assert kept == {"alias.md": "real.md", "pics": "img"}
    assert (tree / "alias.md").resolve() == (tree / "real.md").resolve()
    # one issue per link, the bad ones as warnings
    by_path = {i.path: i for i in ctx.issues}
    assert len(ctx.issues) == len(by_path) == len(BAD) + 2
    assert {p for p, i in by_path.items() if i.severity == "warning"} == BAD
    assert {p for p, i in by_path.items() if i.severity == "info"} == {"alias.md", "pics"}
    assert "loop" in by_path["a.md"].message and "dangling" in by_path["dangling.md"].message
    assert "outside" in by_path["passwd.md"].message and "/etc" not in by_path["passwd.md"].message
    assert (tree / "real.md").read_text().startswith("# Real")


def test_a_folder_copy_skips_what_is_no_regular_file_and_keeps_mtimes(tmp_path: Path) -> None:
    folder = tmp_path / "root" / "site"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "p.md").write_text("hello")
    os.utime(folder / "sub" / "p.md", (1_600_000_000, 1_600_000_000))
    os.mkfifo(folder / "pipe.md")  # a plain copy would block reading it forever
    ctx = context(settings_for(tmp_path, (str(tmp_path / "root"),)), "fetch", source=SourceSpec(path=str(folder)))
    assert fetch.run(ctx).finished
    tree = ctx.artifacts.tree(ctx.key("tree"))  # type: ignore[attr-defined]
    assert sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*")) == ["sub", "sub/p.md"]
    assert (tree / "sub" / "p.md").stat().st_mtime == 1_600_000_000
    assert [(i.path, i.severity) for i in ctx.issues] == [("pipe.md", "warning")]


def test_a_bundle_built_from_hostile_links_publishes_none_of_the_machine(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MARK, "the worker's environment")
    folder = tmp_path / "site"
    hostile_links(folder)
    job = run_job(folder, make_settings(tmp_path / "build"), "links")
    published = b"".join(p.read_bytes() for p in job.bundle.rglob("*") if p.is_file())
    assert b"the only post" in published
    assert b"root:" not in published and ENV_MARK.encode() not in published
    assert not any(p.is_symlink() for p in job.bundle.rglob("*"))


def test_a_failed_clone_names_neither_the_source_folder_nor_the_artifact_store(tmp_path: Path) -> None:
    broken = tmp_path / "root" / "site"
    (broken / ".git").mkdir(parents=True)  # looks like a repository, is none
    settings = settings_for(tmp_path, (str(tmp_path / "root"),))
    for spec in (SourceSpec(path=str(broken)), SourceSpec(url=f"file://{broken}", branch="main")):
        with pytest.raises(PermanentError) as err:
            fetch.run(context(settings, "fetch", source=spec))
        assert "the source folder" in str(err.value)
        assert str(tmp_path) not in str(err.value), err.value
