"""Tier 1: fetch from a real git smart-HTTP server, file:// URLs, local repositories and folders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import PermanentError, TransientError
from pipeline.models import JobSpec, SourceSpec
from pipeline.settings import Settings
from pipeline.sources.git import head_commit
from pipeline.stages import fetch
from pipeline.stages.context import LocalContext
from pipeline.stores.artifacts import LocalArtifactStore
from tests.conftest import ALLOW_LOCAL
from tests.fakes.gitserver import GitHttpServer, make_git_repo

TOKEN = "tok-3f9a1c"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "origin"
    make_git_repo(path, {"a.md": b"# A\n\nfirst\n", "img/x.png": b"\x89PNG"}, "one")
    return path


@pytest.fixture
def server(repo: Path) -> Iterator[GitHttpServer]:
    s = GitHttpServer({"site": repo}, token=TOKEN)
    yield s
    s.stop()


def ctx_for(tmp_path: Path, source: SourceSpec, secrets: dict[str, str] | None = None,
            job: str = "j") -> LocalContext:
    settings = Settings(artifacts=str(tmp_path / "art"), output=str(tmp_path / "out"), temp_dir=str(tmp_path),
                        allow_hosts=ALLOW_LOCAL, local_source_roots=(str(tmp_path),))
    return LocalContext(job_id=job, stage="fetch", spec=JobSpec(job_id=job, task="process-all", source=source),
                        settings=settings, artifacts=LocalArtifactStore(settings.artifacts), secrets=secrets or {})


def tree(ctx: LocalContext) -> Path:
    return ctx.artifacts.tree(ctx.key("tree"))  # type: ignore[no-any-return]


def test_clone_over_http_with_token_and_commit_pinning(tmp_path: Path, repo: Path, server: GitHttpServer) -> None:
    old = repo_head(repo)
    make_git_repo(repo, {"a.md": b"# A\n\nsecond\n"}, "two")
    ctx = ctx_for(tmp_path, SourceSpec(url=server.url_for("site")), {"git_token": TOKEN})
    result = fetch.run(ctx)
    assert (tree(ctx) / "a.md").read_text().endswith("second\n")
    assert not (tree(ctx) / ".git").exists()
    info = ctx.artifacts.get_json(ctx.key("source.json"))
    assert info["commit"] == result.summary["commit"] != old and info["files"] == 2
    assert TOKEN not in str(info)
    pinned = ctx_for(tmp_path, SourceSpec(url=server.url_for("site"), commit=old), {"git_token": TOKEN}, job="p")
    fetch.run(pinned)
    assert (tree(pinned) / "a.md").read_text().endswith("first\n")
    # idempotent: a second run is a no-op with the same answer
    assert fetch.run(ctx).summary["commit"] == result.summary["commit"]


def repo_head(path: Path) -> str:
    sha = head_commit(path)
    assert sha
    return sha


def test_wrong_or_missing_token_is_permanent_and_masked(tmp_path: Path, server: GitHttpServer) -> None:
    ctx = ctx_for(tmp_path, SourceSpec(url=server.url_for("site")), {"git_token": "wrong-secret-value"})
    with pytest.raises(PermanentError) as err:
        fetch.run(ctx)
    assert "wrong-secret-value" not in str(err.value)


def test_unreachable_server_is_transient(tmp_path: Path, server: GitHttpServer) -> None:
    url = server.url_for("site")
    server.stop()
    with pytest.raises(TransientError):
        fetch.run(ctx_for(tmp_path, SourceSpec(url=url), {"git_token": TOKEN}))


def test_file_url_branch_and_local_repo(tmp_path: Path, repo: Path) -> None:
    ctx = ctx_for(tmp_path, SourceSpec(url=f"file://{repo}", branch="main"), job="f")
    assert fetch.run(ctx).summary["commit"] == repo_head(repo)
    local = ctx_for(tmp_path, SourceSpec(path=str(repo)), job="l")
    assert fetch.run(local).summary["commit"] == repo_head(repo)
    with pytest.raises(PermanentError):
        fetch.run(ctx_for(tmp_path, SourceSpec(url=f"file://{repo}", branch="nope"), job="b"))


def test_plain_folder_copy_keeps_mtimes(tmp_path: Path) -> None:
    src = tmp_path / "plain"
    src.mkdir()
    (src / "p.md").write_text("hello")
    os.utime(src / "p.md", (1_600_000_000, 1_600_000_000))
    ctx = ctx_for(tmp_path, SourceSpec(path=str(src)))
    assert fetch.run(ctx).summary["commit"] is None
    assert (tree(ctx) / "p.md").stat().st_mtime == 1_600_000_000
    with pytest.raises(PermanentError, match="does not exist"):
        fetch.run(ctx_for(tmp_path, SourceSpec(path=str(tmp_path / "missing")), job="m"))
