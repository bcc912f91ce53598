"""Committing and pushing over real smart HTTP, and generating repositories through a real GitHub-shaped API."""

from __future__ import annotations

import functools
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from dulwich import porcelain
from dulwich.errors import GitProtocolError
from dulwich.objects import Commit
from dulwich.repo import Repo

from pipeline.errors import PermanentError, TransientError
from pipeline.sources import git, git_write, github_template
from pipeline.sources.git import head_commit
from pipeline.sources.git_write import cause, commit_tree
from pipeline.sources.github_template import GeneratedRepo, RepoRef, parse_repo_ref
from tests.conftest import GIT_TOKEN as TOKEN
from tests.conftest import LOCAL_POLICY
from tests.fakes.github_api_server import GitHubApiServer
from tests.fakes.gitserver import GitHttpServer

WHEN = 1_700_000_000
# Every request here goes to this test's own servers on 127.0.0.1, which the operator's allowlist lets through.
clone = functools.partial(git.clone, policy=LOCAL_POLICY)
push = functools.partial(git_write.push, policy=LOCAL_POLICY)
generate_from_template = functools.partial(github_template.generate_from_template, policy=LOCAL_POLICY)
wait_until_cloneable = functools.partial(github_template.wait_until_cloneable, policy=LOCAL_POLICY)


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(root).parts}


def write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def commit_of(repo_dir: Path, sha: str) -> Commit:
    with Repo(str(repo_dir)) as repo:
        obj = repo[sha.encode()]
    assert isinstance(obj, Commit)
    return obj


def shown_anywhere(exc: BaseException) -> str:
    """What a logged traceback shows of the error and of every exception chained to it, source lines aside."""
    shown: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        shown += traceback.format_exception_only(current) + [repr(current.args)]
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "".join(shown)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[GitHubApiServer]:
    server = GitHubApiServer(tmp_path / "github", token=TOKEN)
    server.add_template("tmpl/site-template", {"README.md": b"# template\n", "posts/hello.md": b"hi\n"})
    yield server
    server.stop()


def test_commit_tree_inits_then_records_edits_and_deletions(tmp_path: Path) -> None:
    work = tmp_path / "work"
    first = {"a.md": b"# A\n", "img/x.png": b"\x89PNG", "old/gone.txt": b"bye"}
    write(work, first)
    sha1 = commit_tree(work, "one", branch="pages", timestamp=WHEN)
    with Repo(str(work)) as repo:
        assert repo.refs.get_symrefs()[b"HEAD"] == b"refs/heads/pages"  # type: ignore[index]
    assert head_commit(work) == sha1
    # nothing changed: no empty commit, the same sha
    assert commit_tree(work, "again", branch="pages", timestamp=WHEN + 5) == sha1
    # same tree, message, author and time elsewhere: the same sha
    twin = tmp_path / "twin"
    write(twin, first)
    assert commit_tree(twin, "one", branch="pages", timestamp=WHEN) == sha1

    (work / "a.md").write_bytes(b"# A, edited\n")
    (work / "old" / "gone.txt").unlink()
    (work / "old").rmdir()
    write(work, {"new.md": b"new\n"})
    sha2 = commit_tree(work, "two", branch="pages", timestamp=WHEN + 60)
    second = commit_of(work, sha2)
    assert sha2 != sha1 and second.parents == [sha1.encode()]
    assert second.author == second.committer == b"repobuild <repobuild@localhost>"
    assert second.message == b"two"
    status = porcelain.status(str(work))
    assert status.staged == {"add": [], "delete": [], "modify": []} and not status.unstaged and not status.untracked
    with Repo(str(work)) as repo:
        assert sorted(p.decode() for p in repo.open_index()) == ["a.md", "img/x.png", "new.md"]


def test_commit_tree_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="not a directory"):
        commit_tree(tmp_path / "missing", "m")
    work = tmp_path / "w"
    write(work, {"a": b"1"})
    with pytest.raises(PermanentError, match="not a valid branch"):
        commit_tree(work, "m", branch="bad..name")
    with pytest.raises(PermanentError, match="Name <email>"):
        commit_tree(work, "m", author="nobody")
    assert not (work / ".git").exists()


def test_push_then_clone_back_over_http(tmp_path: Path, remote: GitHttpServer) -> None:
    work = tmp_path / "work"
    write(work, {"index.html": b"<h1>hi</h1>", "assets/app.js": b"1;", "drop.txt": b"x"})
    sha = commit_tree(work, "build 1", timestamp=WHEN)
    push(work, remote.url_for("site.git"), token=TOKEN)
    back = tmp_path / "back1"
    assert clone(remote.url_for("site.git"), back, token=TOKEN) == sha
    assert files_of(back) == files_of(work)

    (work / "drop.txt").unlink()
    write(work, {"index.html": b"<h1>hi again</h1>"})
    sha2 = commit_tree(work, "build 2", timestamp=WHEN + 1)
    push(work, remote.url_for("site.git"), token=TOKEN)
    push(work, remote.url_for("site.git"), token=TOKEN)  # retried after success: nothing to do, no error
    back2 = tmp_path / "back2"
    assert clone(remote.url_for("site.git"), back2, token=TOKEN) == sha2
    assert files_of(back2) == files_of(work) and "drop.txt" not in files_of(back2)


@pytest.mark.parametrize(("token", "fail_status", "error", "says"), [
    ("wrong-secret-value", None, PermanentError, "401"),
    (None, None, PermanentError, "401"),
    (TOKEN, 403, PermanentError, "lacks write permission"),
    (TOKEN, 503, TransientError, "503"),
])
def test_push_errors_are_classified_and_masked(tmp_path: Path, remote: GitHttpServer, token: str | None,
                                               fail_status: int | None, error: type[Exception], says: str) -> None:
    work = tmp_path / "work"
    write(work, {"a": b"1"})
    commit_tree(work, "m", timestamp=WHEN)
    remote.fail_status = fail_status
    with pytest.raises(error) as err:
        push(work, remote.url_for("site.git"), token=token)
    assert says in str(err.value) and remote.url_for("site.git") in str(err.value)
    for secret in ("wrong-secret-value", TOKEN):
        assert secret not in shown_anywhere(err.value)


def test_push_missing_remote_diverged_branch_and_unreachable(tmp_path: Path, remote: GitHttpServer) -> None:
    work = tmp_path / "work"
    write(work, {"a": b"1"})
    commit_tree(work, "m", timestamp=WHEN)
    with pytest.raises(PermanentError, match="404"):
        push(work, remote.url_for("nope.git"), token=TOKEN)
    with pytest.raises(PermanentError, match="no commit on branch 'other'"):
        push(work, remote.url_for("site.git"), token=TOKEN, branch="other")

    push(work, remote.url_for("site.git"), token=TOKEN)
    stranger = tmp_path / "stranger"
    write(stranger, {"b": b"2"})
    commit_tree(stranger, "unrelated", timestamp=WHEN)
    with pytest.raises(PermanentError, match="not overwriting"):
        push(stranger, remote.url_for("site.git"), token=TOKEN)

    # credentials written into the URL are masked as well
    with_userinfo = remote.url_for("site.git").replace("http://", "http://someone:url-secret@")
    with pytest.raises(PermanentError) as err:
        push(work, with_userinfo, token=None)
    assert "url-secret" not in shown_anywhere(err.value)

    url = remote.url_for("site.git")
    remote.stop()
    with pytest.raises(TransientError) as gone:
        push(work, url, token=TOKEN)
    assert TOKEN not in shown_anywhere(gone.value)


@pytest.mark.parametrize(("text", "owner", "name"), [
    ("https://github.com/o/r", "o", "r"),
    ("https://github.com/o/r.git", "o", "r"),
    ("https://github.com/o/r/", "o", "r"),
    ("o/r", "o", "r"),
    ("  my-org/site.template  ", "my-org", "site.template"),
    ("git@github.com:o/r.git", "o", "r"),
    ("https://ghe.example.org/team/blog", "team", "blog"),
])
def test_parse_repo_ref_forms(text: str, owner: str, name: str) -> None:
    assert parse_repo_ref(text) == RepoRef(owner, name)


@pytest.mark.parametrize("text", ["", "r", "https://github.com/o", "https://github.com/o/r/tree/main",
                                  "o/r/x", "-o/r", "o/..", "https://x:secret@github.com/o"])
def test_parse_repo_ref_rejects(text: str) -> None:
    with pytest.raises(PermanentError) as err:
        parse_repo_ref(text)
    assert "secret" not in str(err.value)


def test_generate_wait_clone_commit_push(tmp_path: Path, api: GitHubApiServer) -> None:
    api.ready_after = 1.0
    made = generate_from_template("https://github.com/tmpl/site-template.git", "my-site", token=TOKEN,
                                  api_base=api.url, description="built by repobuild")
    assert made == GeneratedRepo(full_name="octo/my-site", clone_url=api.clone_url("octo/my-site"),
                                 html_url=f"http://127.0.0.1:{api.git.port}/octo/my-site", default_branch="main")
    sent = api.requests[-1]
    assert sent.path == "/repos/tmpl/site-template/generate"
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["Accept"] == "application/vnd.github+json"
    assert sent.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert sent.body == {"name": "my-site", "description": "built by repobuild", "private": True,
                         "include_all_branches": False}

    # GitHub fills the repository after answering: at first it is not there
    with pytest.raises(TransientError, match="not cloneable after"):
        wait_until_cloneable(made.clone_url, token=TOKEN, branch="main", timeout=0.2, interval=0.05)
    sha = wait_until_cloneable(made.clone_url, token=TOKEN, branch="main", timeout=10, interval=0.05)
    work = tmp_path / "work"
    assert clone(made.clone_url, work, token=TOKEN) == sha
    assert files_of(work) == {"README.md": b"# template\n", "posts/hello.md": b"hi\n"}
    initial = commit_of(work, sha)
    assert initial.parents == [] and initial.message == b"Initial commit\n"

    write(work, {"posts/hello.md": b"hello, world\n", "index.html": b"<p>built</p>"})
    built = commit_tree(work, "build", timestamp=WHEN)
    push(work, made.clone_url, token=TOKEN)
    assert wait_until_cloneable(made.clone_url, token=TOKEN, timeout=1) == built
    assert commit_of(work, built).parents == [sha.encode()]


def test_generate_copies_all_branches_only_when_asked(api: GitHubApiServer) -> None:
    api.add_template("tmpl/multi", {"a.md": b"a"}, branches={"docs": {"d.md": b"d"}})
    only_main = generate_from_template("tmpl/multi", "one", token=TOKEN, api_base=api.url)
    every = generate_from_template("tmpl/multi", "all", token=TOKEN, api_base=api.url, owner="team",
                                   include_all_branches=True, private=False)
    assert every.full_name == "team/all" and api.repos["team/all"].private is False
    branches = {
        name: sorted(ref for ref in porcelain.ls_remote(repo.clone_url, username="x", password=TOKEN).refs
                     if ref.startswith(b"refs/heads/"))
        for name, repo in (("one", only_main), ("all", every))
    }
    assert branches == {"one": [b"refs/heads/main"], "all": [b"refs/heads/docs", b"refs/heads/main"]}


def test_generate_errors(api: GitHubApiServer) -> None:
    api.add_template("tmpl/plain", {"a": b"1"}, is_template=False)
    with pytest.raises(PermanentError, match="lacks permission") as denied:
        generate_from_template("tmpl/site-template", "x", token="wrong-secret-value", api_base=api.url)
    assert "wrong-secret-value" not in shown_anywhere(denied.value)
    for missing in ("tmpl/nothing", "tmpl/plain"):
        with pytest.raises(PermanentError, match="not found, not marked as a template"):
            generate_from_template(missing, "x", token=TOKEN, api_base=api.url)

    generate_from_template("tmpl/site-template", "taken", token=TOKEN, api_base=api.url)
    with pytest.raises(PermanentError, match="name already exists on this account"):
        generate_from_template("tmpl/site-template", "taken", token=TOKEN, api_base=api.url)
    with pytest.raises(PermanentError, match="422"):
        generate_from_template("tmpl/site-template", "bad name!", token=TOKEN, api_base=api.url)
    with pytest.raises(PermanentError, match="needs a GitHub token"):
        generate_from_template("tmpl/site-template", "x", token="", api_base=api.url)

    api.fail_next = (502, {}, {"message": "Server Error"})
    with pytest.raises(TransientError, match="502"):
        generate_from_template("tmpl/site-template", "x", token=TOKEN, api_base=api.url)
    api.fail_next = (403, {"x-ratelimit-remaining": "0"}, {"message": "API rate limit exceeded"})
    with pytest.raises(TransientError, match="rate limit"):
        generate_from_template("tmpl/site-template", "x", token=TOKEN, api_base=api.url)
    # after the transient failures the same call goes through
    assert generate_from_template("tmpl/site-template", "x", token=TOKEN, api_base=api.url).full_name == "octo/x"

    url = api.url
    api.stop()
    with pytest.raises(TransientError, match="cannot reach the GitHub API") as gone:
        generate_from_template("tmpl/site-template", "y", token=TOKEN, api_base=url)
    assert TOKEN not in shown_anywhere(gone.value)


def test_wait_until_cloneable_refused_credentials_are_permanent(api: GitHubApiServer) -> None:
    url = api.clone_url("tmpl/site-template")
    with pytest.raises(PermanentError, match="401") as err:
        wait_until_cloneable(url, token="wrong-secret-value", timeout=5, interval=0.05)
    assert "wrong-secret-value" not in shown_anywhere(err.value)
    with pytest.raises(TransientError, match="branch 'nope'"):
        wait_until_cloneable(url, token=TOKEN, branch="nope", timeout=0.2, interval=0.05)


def test_a_cause_whose_text_shows_the_token_is_not_chained() -> None:
    leaky = GitProtocolError(f"unexpected http resp 403 for http://x-access-token:{TOKEN}@127.0.0.1/r.git")
    assert cause(leaky, TOKEN) is None
    plain = GitProtocolError("unexpected http resp 403 for http://127.0.0.1/r.git")
    assert cause(plain, TOKEN) is plain


def test_a_second_fresh_tree_commits_on_top_of_the_remote(tmp_path: Path, remote: GitHttpServer) -> None:
    """A re-import builds its tree from nothing; fetch_branch makes it a child of the remote's tip, so it pushes."""
    url = remote.url_for("site.git")
    first = tmp_path / "first"
    assert git_write.fetch_branch(first, url, token=TOKEN, policy=LOCAL_POLICY) is None  # empty remote
    write(first, {"posts/a/index.md": b"a", "posts/old/index.md": b"old"})
    sha1 = commit_tree(first, "import 1", timestamp=WHEN)
    push(first, url, token=TOKEN)

    second = tmp_path / "second"  # a new working tree, as a new job has
    write(second, {"posts/a/index.md": b"a, edited"})
    assert git_write.fetch_branch(second, url, token=TOKEN, policy=LOCAL_POLICY) == sha1
    sha2 = commit_tree(second, "import 2", timestamp=WHEN + 1)
    push(second, url, token=TOKEN)
    back = tmp_path / "back"
    assert clone(url, back, token=TOKEN) == sha2
    assert commit_of(back, sha2).parents == [sha1.encode()]
    # what the new import no longer has is deleted, not kept from the old one
    assert files_of(back) == {"posts/a/index.md": b"a, edited"}

    with pytest.raises(PermanentError, match="not found"):
        git_write.fetch_branch(tmp_path / "third", remote.url_for("nope.git"), token=TOKEN, policy=LOCAL_POLICY)
