"""Reading back what a job pushed to the fake git remote (tests.conftest's `remote`), as its owner would."""

from __future__ import annotations

from pathlib import Path

from dulwich import porcelain
from dulwich.objects import Commit
from dulwich.refs import Ref
from dulwich.repo import Repo

from tests.conftest import GIT_TOKEN


def with_token(url: str) -> str:
    """The remote's URL with the token in it, the way clients send a push URL."""
    return url.replace("http://", f"http://x-access-token:{GIT_TOKEN}@", 1)


def clone_back(url: str, dest: Path) -> Path:
    """Clone a pushed repository with dulwich, authenticating as the worker did."""
    porcelain.clone(url, str(dest), username="x-access-token", password=GIT_TOKEN, checkout=True).close()
    return dest


def files_of(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(root).parts}


def head_of_main(repo_dir: Path) -> Commit:
    with Repo(str(repo_dir)) as repo:
        commit = repo[repo.refs[Ref(b"refs/heads/main")]]
        assert isinstance(commit, Commit)
        return commit


def remote_refs(path: Path) -> dict[bytes, bytes]:
    """The refs of a bare repository on disk, HEAD aside: empty when nothing was ever pushed."""
    with Repo(str(path)) as repo:
        return {k: v for k, v in repo.get_refs().items() if k != b"HEAD"}
