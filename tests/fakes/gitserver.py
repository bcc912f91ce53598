"""A real git smart-HTTP server for tests: dulwich's WSGI app on a loopback port, optional basic auth."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from dulwich import porcelain
from dulwich.objects import Blob, Commit, ObjectID, Tree
from dulwich.refs import Ref
from dulwich.repo import Repo
from dulwich.server import DictBackend
from dulwich.web import make_wsgi_chain

AUTHOR = b"Test <test@example.org>"


def make_git_repo(path: Path, files: dict[str, bytes], message: str = "initial", branch: str = "main") -> str:
    """Init (if needed), write files, commit them with a fixed author and time. Returns the commit sha."""
    if not (path / ".git").exists():
        path.mkdir(parents=True, exist_ok=True)
        with Repo.init(str(path)) as repo:
            repo.refs.set_symbolic_ref(Ref(b"HEAD"), Ref(b"refs/heads/" + branch.encode()))
    for rel, data in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    with Repo(str(path)) as repo:
        porcelain.add(repo, [str(path / rel) for rel in files])
        sha = porcelain.commit(repo, message=message.encode(), author=AUTHOR, committer=AUTHOR,
                               commit_timestamp=1_700_000_000, author_timestamp=1_700_000_000)
    return sha.decode()


def commit_raw_tree(path: Path, files: dict[bytes, bytes], message: str = "raw", branch: str = "main") -> str:
    """A repository whose one commit holds `files` (tree paths as bytes), written as git objects, not on disk:
    so a tree can hold what no file system takes (a 300-byte name, a `.git` entry). Returns the commit sha."""
    path.mkdir(parents=True)
    with Repo.init(str(path)) as repo:
        store = repo.object_store
        trees: dict[bytes, Tree] = {b"": Tree()}
        for rel in sorted(files):
            blob = Blob.from_string(files[rel])
            store.add_object(blob)
            *folders, name = rel.split(b"/")
            for depth in range(len(folders)):
                trees.setdefault(b"/".join(folders[:depth + 1]), Tree())
            trees[b"/".join(folders)].add(name, 0o100644, blob.id)
        for folder in sorted(trees, key=lambda f: -f.count(b"/") if f else 1):  # deepest first, root last
            if folder:
                parent, _, name = folder.rpartition(b"/")
                store.add_object(trees[folder])
                trees[parent].add(name, 0o040000, trees[folder].id)
        store.add_object(trees[b""])
        commit = Commit()
        commit.tree, commit.author, commit.committer = trees[b""].id, AUTHOR, AUTHOR
        commit.commit_time = commit.author_time = 1_700_000_000
        commit.commit_timezone = commit.author_timezone = 0
        commit.message = message.encode()
        store.add_object(commit)
        repo.refs[Ref(b"refs/heads/" + branch.encode())] = ObjectID(commit.id)
        repo.refs.set_symbolic_ref(Ref(b"HEAD"), Ref(b"refs/heads/" + branch.encode()))
        return commit.id.decode()


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        return


class GitHttpServer:
    """Serves fetch and push (dulwich's receive-pack) of the given repositories; push to bare ones.

    `fail_status`, when set, is the answer to every request, to test how clients treat a 403 or a 5xx.
    `authorizations` records the Authorization header of every request ("" when there was none).
    """

    def __init__(self, repos: dict[str, Path], token: str | None = None) -> None:
        self._repos: dict[bytes, Repo] = {f"/{name}".encode(): Repo(str(path)) for name, path in repos.items()}
        # dict is invariant: a dict of Repo is not one of BackendRepo to mypy, though Repo is a BackendRepo
        app = make_wsgi_chain(DictBackend(self._repos))  # type: ignore[arg-type]
        self.token = token
        self.fail_status: int | None = None
        self.authorizations: list[str] = []
        self.httpd = make_server("127.0.0.1", 0, self._auth(app), handler_class=_Quiet)
        self.port = self.httpd.server_port
        # a short poll makes stop() quick: shutdown() waits for the loop to look at its flag
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def add_repo(self, name: str, path: Path) -> str:
        """Serve one more repository (the backend reads the same dict on every request). Returns its URL."""
        self._repos[f"/{name}".encode()] = Repo(str(path))
        return self.url_for(name)

    def _auth(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            self.authorizations.append(environ.get("HTTP_AUTHORIZATION", ""))
            if self.fail_status is not None:
                start_response(f"{self.fail_status} Failing on purpose", [("Content-Length", "0")])
                return [b""]
            if self.token is not None:
                header = environ.get("HTTP_AUTHORIZATION", "")
                ok = False
                if header.startswith("Basic "):
                    _user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    ok = password == self.token
                if not ok:
                    start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"'),
                                                        ("Content-Length", "0")])
                    return [b""]
            return app(environ, start_response)

        return wrapped

    def url_for(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        for repo in list(self._repos.values()):
            repo.close()


def empty_remote(root: Path, token: str) -> GitHttpServer:
    """A server with one empty bare repository, `site.git` (HEAD on main, like a hosted one), taking only `token`."""
    Repo.init_bare(str(root / "remote.git"), mkdir=True, default_branch=b"main").close()
    return GitHttpServer({"site.git": root / "remote.git"}, token=token)
