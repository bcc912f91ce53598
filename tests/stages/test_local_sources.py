"""Tier 1: paths on this machine that a job names are taken only under REPOBUILD_LOCAL_SOURCE_ROOTS
(issue 9, "the server's own disk")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import PermanentError
from pipeline.models import JobSpec, SourceSpec
from pipeline.settings import Settings
from pipeline.sources.local_roots import NOT_ALLOWED, existing_local, local_path_of, resolve_local
from pipeline.stages import build_db, enrich, fetch, source
from pipeline.stages.context import LocalContext
from pipeline.stores.artifacts import LocalArtifactStore

SECRET = b"root:x:0:0:the host's own file\n"


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


def test_a_failed_clone_names_neither_the_source_folder_nor_the_artifact_store(tmp_path: Path) -> None:
    broken = tmp_path / "root" / "site"
    (broken / ".git").mkdir(parents=True)  # looks like a repository, is none
    settings = settings_for(tmp_path, (str(tmp_path / "root"),))
    for spec in (SourceSpec(path=str(broken)), SourceSpec(url=f"file://{broken}", branch="main")):
        with pytest.raises(PermanentError) as err:
            fetch.run(context(settings, "fetch", source=spec))
        assert "the source folder" in str(err.value)
        assert str(tmp_path) not in str(err.value), err.value
