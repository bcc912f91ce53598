"""A small real GitHub REST API for tests on a loopback port: `POST /repos/{owner}/{repo}/generate`,
`POST /user/repos` and `/orgs/{org}/repos`, `GET /user` and `GET /repos/{owner}/{repo}`.

Template repositories are made with make_git_repo and served, like the repositories generated from them,
by a GitHttpServer that accepts the same token as basic auth, as github.com does. A generated repository
holds the template's tree in one new commit per copied branch, as GitHub's do, and appears on the git
server only `ready_after` seconds after the 201, to reproduce GitHub filling it asynchronously.
"""

from __future__ import annotations

import json
import re
import stat
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dulwich.objects import S_ISGITLINK, Commit, Tree
from dulwich.refs import Ref
from dulwich.repo import Repo

from tests.fakes.gitserver import GitHttpServer, make_git_repo

_GENERATE = re.compile(r"/repos/([^/]+)/([^/]+)/generate")
_CREATE = re.compile(r"/user/repos|/orgs/([^/]+)/repos")
_REPO = re.compile(r"/repos/([^/]+)/([^/]+)")
_NAME = re.compile(r"[A-Za-z0-9._-]+")


@dataclass
class FakeRepo:
    owner: str
    name: str
    path: Path
    is_template: bool
    private: bool = False
    description: str = ""
    default_branch: str = "main"
    template: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class GitHubApiServer:
    def __init__(self, root: Path, *, token: str, login: str = "octo", ready_after: float = 0.0) -> None:
        self.root = root
        self.token = token
        self.login = login
        self.ready_after = ready_after
        self.repos: dict[str, FakeRepo] = {}  # keyed by lower-cased full name: GitHub's names ignore case
        self.requests: list[Recorded] = []
        # (status, headers, body) answered once, before anything else, to test 5xx and rate limits
        self.fail_next: tuple[int, dict[str, str], dict[str, Any]] | None = None
        self._timers: list[threading.Timer] = []
        self._lock = threading.Lock()
        self.git = GitHttpServer({}, token=token)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def add_template(self, full_name: str, files: dict[str, bytes], *, is_template: bool = True,
                     branches: dict[str, dict[str, bytes]] | None = None) -> FakeRepo:
        """A repository on `main` with `files`, plus one commit per extra branch (on top of main's files)."""
        owner, name = full_name.split("/")
        path = self.root / "templates" / owner / name
        make_git_repo(path, files)
        for branch, extra in (branches or {}).items():
            with Repo(str(path)) as repo:
                repo.refs[Ref(f"refs/heads/{branch}".encode())] = repo.head()
                repo.refs.set_symbolic_ref(Ref(b"HEAD"), Ref(f"refs/heads/{branch}".encode()))
            make_git_repo(path, extra, f"on {branch}")
            with Repo(str(path)) as repo:
                repo.refs.set_symbolic_ref(Ref(b"HEAD"), Ref(b"refs/heads/main"))
        repo_info = FakeRepo(owner, name, path, is_template)
        self.repos[full_name.lower()] = repo_info
        self.git.add_repo(f"{full_name}.git", path)
        return repo_info

    def clone_url(self, full_name: str) -> str:
        return self.git.url_for(f"{full_name}.git")

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.git.stop()

    def as_json(self, repo: FakeRepo) -> dict[str, Any]:
        base = f"http://127.0.0.1:{self.git.port}"
        answer: dict[str, Any] = {
            "name": repo.name, "full_name": repo.full_name, "owner": {"login": repo.owner},
            "private": repo.private, "description": repo.description, "is_template": repo.is_template,
            "html_url": f"{base}/{repo.full_name}", "clone_url": self.clone_url(repo.full_name),
            "url": f"{self.url}/repos/{repo.full_name}", "default_branch": repo.default_branch,
        }
        if repo.template:
            answer["template_repository"] = {"full_name": repo.template}
        return answer

    def _generate(self, owner: str, name: str, body: Any) -> tuple[int, dict[str, Any]]:
        template = self.repos.get(f"{owner}/{name}".lower())
        if template is None or not template.is_template:
            return 404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not _NAME.fullmatch(body["name"]):
            return 422, {"message": "Invalid request.", "errors": ["name is missing or not a valid repository name"]}
        new_owner = body.get("owner") or self.login
        full_name = f"{new_owner}/{body['name']}"
        with self._lock:
            if full_name.lower() in self.repos:
                return 422, {"message": "Repository creation failed.",
                             "errors": [{"resource": "Repository", "code": "custom", "field": "name",
                                         "message": "name already exists on this account"}]}
            path = self.root / "generated" / new_owner / f"{body['name']}.git"
            _copy_as_new_repo(template.path, path, all_branches=bool(body.get("include_all_branches")))
            repo = FakeRepo(new_owner, body["name"], path, is_template=False, private=bool(body.get("private")),
                            description=str(body.get("description") or ""), template=template.full_name)
            self.repos[full_name.lower()] = repo
        if self.ready_after > 0:
            timer = threading.Timer(self.ready_after, self.git.add_repo, (f"{full_name}.git", path))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
        else:
            self.git.add_repo(f"{full_name}.git", path)
        return 201, self.as_json(repo)

    def _create(self, org: str | None, body: Any) -> tuple[int, dict[str, Any]]:
        """`POST /user/repos` or `/orgs/{org}/repos`: an empty repository, cloneable and pushable at once."""
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not _NAME.fullmatch(body["name"]):
            return 422, {"message": "Invalid request.", "errors": ["name is missing or not a valid repository name"]}
        owner = org or self.login
        full_name = f"{owner}/{body['name']}"
        with self._lock:
            if full_name.lower() in self.repos:
                return 422, {"message": "Repository creation failed.",
                             "errors": [{"resource": "Repository", "code": "custom", "field": "name",
                                         "message": "name already exists on this account"}]}
            path = self.root / "created" / owner / f"{body['name']}.git"
            path.parent.mkdir(parents=True, exist_ok=True)
            Repo.init_bare(str(path), mkdir=True, default_branch=b"main").close()
            repo = FakeRepo(owner, body["name"], path, is_template=False, private=bool(body.get("private")),
                            description=str(body.get("description") or ""))
            self.repos[full_name.lower()] = repo
        self.git.add_repo(f"{full_name}.git", path)
        return 201, self.as_json(repo)

    def _get(self, path: str) -> tuple[int, dict[str, Any]]:
        if path == "/user":
            return 200, {"login": self.login}
        found = _REPO.fullmatch(path)
        repo = self.repos.get(f"{found.group(1)}/{found.group(2)}".lower()) if found else None
        return (200, self.as_json(repo)) if repo is not None else (404, {"message": "Not Found"})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                api.requests.append(Recorded("POST", self.path, dict(self.headers.items()), body))
                if api.fail_next is not None:
                    status, headers, answer = api.fail_next
                    api.fail_next = None
                    self._answer(status, answer, headers)
                    return
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    self._answer(401, {"message": "Bad credentials"})
                    return
                found = _GENERATE.fullmatch(self.path)
                create = _CREATE.fullmatch(self.path)
                if found:
                    self._answer(*api._generate(found.group(1), found.group(2), body))
                elif create:
                    self._answer(*api._create(create.group(1), body))
                else:
                    self._answer(404, {"message": "Not Found"})

            def do_GET(self) -> None:
                api.requests.append(Recorded("GET", self.path, dict(self.headers.items()), None))
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    self._answer(401, {"message": "Bad credentials"})
                    return
                self._answer(*api._get(self.path))

        return Handler


def _copy_as_new_repo(src: Path, dest: Path, *, all_branches: bool) -> None:
    """A bare repository with the template's tree(s), each in a fresh parentless commit, as GitHub makes them."""
    dest.mkdir(parents=True)
    with Repo(str(src)) as source, Repo.init_bare(str(dest)) as target:
        default = source.refs.get_symrefs()[Ref(b"HEAD")]
        refs = [ref for ref in source.refs.keys() if ref.startswith(b"refs/heads/")] if all_branches else [default]
        for ref in refs:
            commit = source[source.refs[ref]]
            assert isinstance(commit, Commit)
            _copy_tree(source, target, commit.tree)
            fresh = Commit()
            fresh.tree = commit.tree
            fresh.author = fresh.committer = b"GitHub <noreply@github.com>"
            fresh.author_time = fresh.commit_time = int(time.time())
            fresh.author_timezone = fresh.commit_timezone = 0
            fresh.message = b"Initial commit\n"
            target.object_store.add_object(fresh)
            target.refs[ref] = fresh.id
        target.refs.set_symbolic_ref(Ref(b"HEAD"), default)


def _copy_tree(source: Repo, target: Repo, tree_id: bytes) -> None:
    tree = source[tree_id]
    assert isinstance(tree, Tree)
    target.object_store.add_object(tree)
    for entry in tree.items():
        if stat.S_ISDIR(entry.mode):
            _copy_tree(source, target, entry.sha)
        elif not S_ISGITLINK(entry.mode):  # a submodule's commit lives in another repository
            target.object_store.add_object(source[entry.sha])
