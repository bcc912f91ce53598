"""Tier 1: the `source` stage (WordPress import, project from a brief, repository from a template) and `fetch`
taking what it made, with real local servers: a media server, a git smart-HTTP server, an OpenAI-compatible
server and a GitHub API."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dulwich.objects import Commit
from dulwich.refs import Ref
from dulwich.repo import Repo

from pipeline.catalog import MADE_TREE
from pipeline.errors import PermanentError, TransientError
from pipeline.models import JobSpec
from pipeline.settings import Settings
from pipeline.stages import fetch, source
from pipeline.stages.context import LocalContext
from pipeline.stores.artifacts import LocalArtifactStore
from tests.conftest import ALLOW_LOCAL
from tests.conftest import GIT_TOKEN as TOKEN
from tests.fakes.github_api_server import GitHubApiServer
from tests.fakes.gitserver import GitHttpServer
from tests.fakes.openai_server import OpenAIServer
from tests.fakes.wordpress_site import BILLION_LAUGHS, PHOTO, UPLOADS, MediaServer, item, realistic, wxr
from tests.stages.test_brief import project, reply
from tests.stages.test_git_write import clone, shown_anywhere

API_KEY = "sk-source-test-key"
CHAT = "/v1/chat/completions"
CREATED = 1_700_000_000.0
BRIEF = "A tiny wiki about sourdough baking for beginners."


# ------------------------------------------------------------------------------------------------ helpers


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(artifacts=str(tmp_path / "art"), output=str(tmp_path / "out"), temp_dir=str(tmp_path),
                    openai_chat_model="chat-test", allow_hosts=ALLOW_LOCAL, local_source_roots=(str(tmp_path),))


@pytest.fixture
def media() -> Iterator[MediaServer]:
    server = MediaServer({f"{UPLOADS}/photo.jpg": PHOTO, f"{UPLOADS}/cover.png": b"\x89PNGcover"})
    yield server
    server.stop()


@pytest.fixture
def llm() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def github(tmp_path: Path) -> Iterator[GitHubApiServer]:
    server = GitHubApiServer(tmp_path / "github", token=TOKEN, ready_after=0.3)
    server.add_template("tmpl/site-template", {"README.md": b"# template\n", "posts/hello.md": b"hi [[README]]\n"})
    yield server
    server.stop()


def context(settings: Settings, task: str, options: dict[str, Any], *, stage: str = "source",
            secrets: dict[str, str] | None = None, job: str = "j1") -> LocalContext:
    spec = JobSpec(job_id=job, task=task, options=options, created_at=CREATED)
    return LocalContext(job_id=job, stage=stage, spec=spec, settings=settings,
                        artifacts=LocalArtifactStore(settings.artifacts), secrets=dict(secrets or {}))


def fetch_after(ctx: LocalContext) -> Path:
    """Run fetch on the same job and store as the source stage ran; returns fetch's tree."""
    fctx = LocalContext(job_id=ctx.job_id, stage="fetch", spec=ctx.spec, settings=ctx.settings,
                        artifacts=ctx.artifacts, secrets=ctx.secrets)
    result = fetch.run(fctx)
    info = fctx.artifacts.get_json(fctx.key("source.json"))
    assert info["commit"] == result.summary["commit"] == made(ctx)["commit"]
    tree: Path = fctx.artifacts.tree(fctx.key("tree"))
    assert not (tree / ".git").exists()
    return tree


def made(ctx: LocalContext) -> dict[str, Any]:
    result: dict[str, Any] = ctx.artifacts.get_json(ctx.key("result/source.json"))
    return result


def files_of(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and ".git" not in p.relative_to(root).parts)


def commit_message(repo_dir: Path, sha: str) -> bytes:
    with Repo(str(repo_dir)) as repo:
        commit = repo[sha.encode()]
        assert isinstance(commit, Commit)
        assert repo.refs[Ref(b"refs/heads/main")] == sha.encode()
        message: bytes = commit.message
        return message


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def brief_settings(settings: Settings, llm: OpenAIServer) -> Settings:
    return settings.with_(openai_base_url=llm.base_url, openai_api_key=API_KEY)


# ------------------------------------------------------------------------------------------------ wp-import


def test_wp_import_makes_a_committed_tree_that_fetch_takes(settings: Settings, media: MediaServer) -> None:
    ctx = context(settings, "wp-import", {"wpXml": b64(realistic(media.base))})
    result = source.run(ctx)
    assert result.finished
    info = made(ctx)
    assert result.summary == info
    assert info["kind"] == "git-tree" and info["branch"] == "main" and info["remote"] is None
    counts = info["import"]
    assert (counts["posts"], counts["pages"], counts["drafts"]) == (6, 1, 1)
    assert counts["attachmentsDownloaded"] >= 1 and counts["issues"] == len(ctx.issues) >= 1
    # the converter's issues are the job's, under this stage's name
    assert all(issue.stage == "source" for issue in ctx.issues)
    assert any("missing.png" in issue.message or "missing.png" in issue.path for issue in ctx.issues)

    repo_dir = ctx.artifacts.tree(ctx.key("repo"))
    assert commit_message(repo_dir, info["commit"]) == b"Initial import from WordPress"

    tree = fetch_after(ctx)
    names = files_of(tree)
    assert info["files"] == len(names)
    assert "posts/hello-world/index.md" in names and "pages/about/index.md" in names
    assert "posts/_drafts/id-13/index.md" in names
    assert (tree / "posts/hello-world/images/photo.jpg").read_bytes() == PHOTO
    assert "title: Hello World" in (tree / "posts/hello-world/index.md").read_text()


def test_wp_import_reads_a_file_and_refuses_private_media_by_default(settings: Settings, media: MediaServer,
                                                                     tmp_path: Path) -> None:
    export = tmp_path / "export.xml"
    export.write_bytes(realistic(media.base))
    # no allowlist: the media server's loopback address is refused like any other non-public one
    ctx = context(settings.with_(allow_hosts=()), "wp-import", {"xmlFilePath": str(export)})
    source.run(ctx)
    assert made(ctx)["import"]["attachmentsDownloaded"] == 0
    assert media.requests == []  # loopback addresses are not fetched unless the operator allows them
    tree = fetch_after(ctx)
    assert "posts/hello-world/index.md" in files_of(tree)
    assert not any("/images/" in name for name in files_of(tree))


def test_wp_import_pushes_with_the_token_and_does_not_push_again(settings: Settings, remote: GitHttpServer,
                                                                 tmp_path: Path) -> None:
    xml = wxr("https://blog.example", "\n".join([
        item(1, "post", "publish", title="First", slug="first", content="<p>One.</p>"),
        item(2, "page", "publish", title="Contact", slug="contact", content="<p>Write.</p>"),
    ]))
    url = remote.url_for("site.git")
    ctx = context(settings, "wp-import", {"wpXml": b64(xml), "repoUrl": url}, secrets={"git_token": TOKEN})
    result = source.run(ctx)
    assert result.summary["remote"] == url and TOKEN not in repr(result.summary)
    back = tmp_path / "back"
    assert clone(url, back, token=TOKEN) == result.summary["commit"]
    assert files_of(back) == ["pages/contact/index.md", "posts/first/index.md"]

    remote.fail_status = 503  # a second push would fail: the retried stage must answer from its result
    assert source.run(ctx).summary == result.summary


def test_wp_import_push_with_a_wrong_token_is_permanent_and_masked(settings: Settings,
                                                                   remote: GitHttpServer) -> None:
    xml = wxr("https://blog.example", item(1, "post", "publish", title="First", slug="first", content="x"))
    wrong = "wrong-token-5a5a5a"
    ctx = context(settings, "wp-import", {"wpXml": b64(xml), "remoteUrl": remote.url_for("site.git")},
                  secrets={"git_token": wrong})
    with pytest.raises(PermanentError, match="401") as err:
        source.run(ctx)
    assert wrong not in shown_anywhere(err.value) and TOKEN not in shown_anywhere(err.value)
    assert not ctx.artifacts.exists(ctx.key("result/source.json"))


def test_hostile_wxr_is_permanent_and_leaves_nothing(settings: Settings) -> None:
    xml = wxr("https://blog.example", item(1, "post", "publish", title="x", slug="x", content="x"),
              doctype=BILLION_LAUGHS)
    xml = xml.replace(b"<title><![CDATA[x]]></title>", b"<title>&lol9;</title>")
    ctx = context(settings, "wp-import", {"wpXml": b64(xml)})
    started = time.monotonic()
    with pytest.raises(PermanentError, match="DTD"):
        source.run(ctx)
    assert time.monotonic() - started < 5
    assert ctx.artifacts.list(f"jobs/{ctx.job_id}/") == []


@pytest.mark.parametrize(("options", "message"), [
    ({}, "wpXml"),
    ({"wpXml": "not base64!"}, "not valid base64"),
    ({"xmlFilePath": "/nonexistent/export.xml"}, "not under an allowed local source root"),
    ({"wpXml": b64(b"<html><body>hello</body></html>")}, "not a WordPress export"),
])
def test_wp_import_bad_input(settings: Settings, options: dict[str, Any], message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        source.run(context(settings, "wp-import", options))


# ------------------------------------------------------------------------------------------------ brief


def test_brief_project_is_committed_and_fetchable(settings: Settings, llm: OpenAIServer) -> None:
    llm.queue_replies(reply(project(5)))
    ctx = context(brief_settings(settings, llm), "generate-project-from-brief", {"brief": BRIEF})
    result = source.run(ctx)
    assert result.summary["kind"] == "git-tree" and result.summary["files"] == 5
    (req,) = llm.requests_to(CHAT)
    assert req.body["model"] == "chat-test" and BRIEF in req.body["messages"][1]["content"]
    repo_dir = ctx.artifacts.tree(ctx.key("repo"))
    assert commit_message(repo_dir, result.summary["commit"]) == b"Generate project from brief"
    tree = fetch_after(ctx)
    assert files_of(tree) == [f"notes/page-{i}.md" for i in range(5)]
    assert "[[Page 2]]" in (tree / "notes/page-1.md").read_text()


def test_brief_with_a_repo_name_creates_the_repository_and_pushes(settings: Settings, llm: OpenAIServer,
                                                                   github: GitHubApiServer, tmp_path: Path) -> None:
    """The original's `repoName`: a new GitHub repository, created once even when the stage runs again."""
    llm.queue_replies(reply(project(5)))
    ctx = context(brief_settings(settings, llm).with_(github_api_url=github.url), "generate-project-from-brief",
                  {"brief": BRIEF, "repoName": "garden-notes"}, secrets={"git_token": TOKEN})
    result = source.run(ctx)
    assert result.summary["created"] == "octo/garden-notes" and TOKEN not in repr(result.summary)
    (create,) = [r for r in github.requests if r.method == "POST"]
    assert create.path == "/user/repos" and create.body["name"] == "garden-notes" and create.body["private"] is True
    pushed = clone(github.clone_url("octo/garden-notes"), tmp_path / "back", token=TOKEN)
    assert pushed == result.summary["commit"]
    assert files_of(tmp_path / "back") == [f"notes/page-{i}.md" for i in range(5)]
    # a retried delivery (the first answer lost): the existing repository is found and used, not a failure
    ctx.artifacts.delete_prefix(ctx.key("result/source.json"))
    again = source.run(ctx)
    assert again.summary["created"] == "octo/garden-notes" and again.summary["commit"] == pushed
    assert [r.path for r in github.requests if r.method == "GET"][-1] == "/repos/octo/garden-notes"
    assert len(llm.requests_to(CHAT)) == 1


def test_brief_invalid_then_good(settings: Settings, llm: OpenAIServer) -> None:
    llm.queue_replies(reply(project(3)), reply(project(6)))
    ctx = context(brief_settings(settings, llm), "generate-and-deploy-project", {"brief": BRIEF})
    assert source.run(ctx).summary["files"] == 6
    assert len(llm.requests_to(CHAT)) == 2


def test_brief_hopeless_replies_are_permanent(settings: Settings, llm: OpenAIServer) -> None:
    llm.queue_replies("no json here", reply(project(2)), reply([]))
    ctx = context(brief_settings(settings, llm), "generate-project-from-brief", {"brief": BRIEF})
    with pytest.raises(PermanentError, match="no valid project in 3 replies"):
        source.run(ctx)
    assert len(llm.requests_to(CHAT)) == 3
    assert ctx.artifacts.list(f"jobs/{ctx.job_id}/") == []


@pytest.mark.parametrize("options", [{}, {"brief": "   "}, {"brief": 42}])
def test_brief_missing_names_the_field(settings: Settings, llm: OpenAIServer, options: dict[str, Any]) -> None:
    ctx = context(brief_settings(settings, llm), "generate-project-from-brief", options)
    with pytest.raises(PermanentError, match="`brief`"):
        source.run(ctx)
    assert llm.requests == []


def test_brief_is_idempotent_and_a_failed_push_does_not_ask_the_model_again(
        settings: Settings, llm: OpenAIServer, remote: GitHttpServer, tmp_path: Path) -> None:
    llm.queue_replies(reply(project(5)), reply(project(7)))
    url = remote.url_for("site.git")
    ctx = context(brief_settings(settings, llm), "generate-project-from-brief", {"brief": BRIEF, "repoUrl": url},
                  secrets={"git_token": TOKEN})
    remote.fail_status = 503
    with pytest.raises(TransientError):
        source.run(ctx)
    remote.fail_status = None
    first = source.run(ctx)  # the retry pushes what the first attempt made
    assert len(llm.requests_to(CHAT)) == 1 and first.summary["files"] == 5
    again = context(ctx.settings, ctx.spec.task, ctx.spec.options, secrets=ctx.secrets)  # another worker
    assert source.run(again).summary == first.summary
    assert len(llm.requests_to(CHAT)) == 1
    assert clone(url, tmp_path / "back", token=TOKEN) == first.summary["commit"]
    assert TOKEN not in repr(first.summary) and API_KEY not in repr(first.summary)


def test_brief_without_a_key_or_server_is_permanent(settings: Settings) -> None:
    with pytest.raises(PermanentError, match="OPENAI_API_KEY"):
        source.run(context(settings, "generate-project-from-brief", {"brief": BRIEF}))


# ------------------------------------------------------------------------------------------------ template


def test_template_makes_a_url_that_fetch_clones(settings: Settings, github: GitHubApiServer) -> None:
    options = {"templateRepoUrl": "https://github.com/tmpl/site-template", "newRepoName": "my-site",
               "description": "mine", "private": False}
    ctx = context(settings.with_(github_api_url=github.url), "new-repo-from-template", options,
                  secrets={"git_token": TOKEN})
    result = source.run(ctx)
    info = made(ctx)
    assert result.summary == info and TOKEN not in repr(info)
    assert info["kind"] == "url" and info["url"] == github.clone_url("octo/my-site")
    assert info["fullName"] == "octo/my-site" and info["branch"] == "main" and len(info["commit"]) == 40
    (call,) = github.requests
    assert call.path == "/repos/tmpl/site-template/generate"
    assert call.body == {"name": "my-site", "description": "mine", "private": False, "include_all_branches": False}
    tree = fetch_after(ctx)
    assert files_of(tree) == ["README.md", "posts/hello.md"]
    assert source.run(ctx).summary == result.summary
    assert len(github.requests) == 1  # not asked to create it twice


@pytest.mark.parametrize(("options", "secrets", "message"), [
    ({"templateRepoUrl": "tmpl/site-template", "newRepoName": "x"}, {}, "needs a GitHub token"),
    ({"newRepoName": "x"}, {"git_token": TOKEN}, "`templateRepoUrl`"),
    ({"templateRepoUrl": "tmpl/site-template"}, {"git_token": TOKEN}, "`newRepoName`"),
    ({"templateRepoUrl": "tmpl/site-template", "newRepoName": "x", "private": "maybe"}, {"git_token": TOKEN},
     "`private`"),
])
def test_template_bad_input_asks_nothing_of_github(settings: Settings, github: GitHubApiServer,
                                                   options: dict[str, Any], secrets: dict[str, str],
                                                   message: str) -> None:
    ctx = context(settings.with_(github_api_url=github.url), "process-from-template", options, secrets=secrets)
    with pytest.raises(PermanentError, match=message):
        source.run(ctx)
    assert github.requests == []


# ------------------------------------------------------------------------------------------------ the rest


def test_unknown_task_and_fetch_without_any_source(settings: Settings) -> None:
    with pytest.raises(PermanentError, match="process-all"):
        source.run(context(settings, "process-all", {}))
    with pytest.raises(PermanentError, match="the job has no source"):
        fetch.run(context(settings, "wp-import", {}, stage="fetch"))


def test_settings_round_trip_the_new_fields() -> None:
    custom = Settings(openai_chat_model="llama-3-8b", github_api_url="https://ghe.example/api/v3")
    back = Settings.from_env(custom.to_env())
    assert (back.openai_chat_model, back.github_api_url) == ("llama-3-8b", "https://ghe.example/api/v3")
    assert (Settings.from_env({}).openai_chat_model, Settings.from_env({}).github_api_url) == (
        "gpt-4o-mini", "https://api.github.com")


def test_wp_media_downloads_are_checkpointed_past_a_silent_host(settings: Settings) -> None:
    """A host that accepts and never answers costs one timeout per URL, once: the stage continues from its cursor
    instead of starting over, and what could not be fetched is an issue with its original URL kept."""
    silent = {f"{UPLOADS}/silent-{n}.jpg" for n in range(3)}
    server = MediaServer({f"{UPLOADS}/photo.jpg": PHOTO}, hang=frozenset(silent))
    try:
        body = "".join(f'<p><img src="{server.base}{path}" alt="s"/></p>' for path in sorted(silent))
        items = [item(1, "post", "publish", title="Silent", slug="silent", content=body),
                 item(2, "post", "publish", title="Fine", slug="fine",
                      content=f'<p><img src="{server.base}{UPLOADS}/photo.jpg" alt="p"/></p>')]
        xml = wxr(server.base, "\n".join(items))
        quick = settings.model_copy(update={"wp_media_timeout_s": 0.3})
        ctx = context(quick, "wp-import", {"wpXml": base64.b64encode(xml).decode()})
        ctx.budget_s = 0.0  # every call yields after one URL, as continuations after a spent budget would
        calls, cursors = 0, []
        while True:
            ctx.restart_budget()
            result = source.run(ctx)
            calls += 1
            if result.finished:
                break
            cursors.append(dict(ctx.cursor or {}))
        assert [c["next"] for c in cursors] == [1, 2, 3]  # one URL per continuation, never from zero again
        assert calls == 4
        # each URL was asked for exactly once, across all the continuations
        assert sorted(server.requests) == sorted([*silent, f"{UPLOADS}/photo.jpg"])
        failed = [i for i in ctx.issues if i.path == "posts/silent/index.md"]
        assert len(failed) == 3 and all("media not downloaded" in i.message and "ReadTimeout" in i.message
                                        for i in failed), ctx.issues
        tree = ctx.artifacts.tree(MADE_TREE.key(ctx.job_id))
        assert (tree / "posts/fine/images/photo.jpg").read_bytes() == PHOTO
        assert f"{server.base}{UPLOADS}/silent-0.jpg" in (tree / "posts/silent/index.md").read_text()
    finally:
        server.stop()


def test_wp_media_budget_spent_leaves_the_rest_as_issues(settings: Settings, media: MediaServer) -> None:
    spent = settings.model_copy(update={"wp_media_budget_s": 0.0})
    ctx = context(spent, "wp-import", {"wpXml": base64.b64encode(realistic(media.base)).decode()})
    result = source.run(ctx)
    assert result.finished and media.requests == []
    assert result.summary["import"]["attachmentsDownloaded"] == 0
    assert ctx.issues and all("media budget of 0s was spent" in i.message for i in ctx.issues
                              if i.kind == "attachment")


def test_wp_import_local_builds_without_private_or_unpublished_posts(settings: Settings, media: MediaServer) -> None:
    """source → fetch → parse → build_db → publish in process, sharing one issue list as the job store would:
    private, password-protected, draft and scheduled posts reach neither posts.json nor content.sqlite (FTS),
    and the source stage's issues reach the bundle's issue file and counts."""
    from pipeline.stages import build_db, parse, publish  # noqa: PLC0415 - only this test builds a bundle
    from pipeline.stages.context import run_to_end  # noqa: PLC0415

    items = [
        item(1, "post", "publish", title="Open harbour", slug="open",
             content=f'<p>boats everywhere</p><audio controls src="{media.base}{UPLOADS}/song.mp3"></audio>'),
        item(9, "attachment", "inherit", title="song", slug="song", attachment_url=f"{media.base}{UPLOADS}/song.mp3"),
        item(2, "post", "private", title="Private", slug="private", content="<p>zanzibarprivate</p>"),
        item(3, "post", "publish", title="Locked", slug="locked", content="<p>zanzibarlocked</p>", password="pw"),
        item(4, "post", "future", title="Scheduled", slug="scheduled", content="<p>zanzibarfuture</p>",
             date_gmt="2030-01-01 00:00:00"),
        item(5, "post", "draft", title="Draft", slug="draft", content="<p>zanzibardraft</p>"),
    ]
    path = Path(settings.temp_dir) / "export.xml"
    media.routes[f"{UPLOADS}/song.mp3"] = b"ID3-song-bytes"
    path.write_bytes(wxr(media.base, "\n".join(items)))
    options = {"xmlFilePath": str(path), "skipEmbeddings": True}
    first = context(settings, "wp-import-local", options)
    assert source.run(first).finished
    issues = first.issues
    for stage, run in (("fetch", fetch.run), ("parse", parse.run), ("build_db", build_db.run),
                       ("publish", publish.run)):
        ctx = context(settings, "wp-import-local", options, stage=stage)
        ctx.batch_fn = parse.run_batch if stage == "parse" else None
        ctx.issues = issues
        result = run_to_end(run, ctx)
    bundle = Path(result.summary["path"])
    posts = json.loads((bundle / "posts.json").read_bytes())
    assert [p["slug"] for p in posts] == ["open"]
    # the audio attachment is media: saved beside the post, linked, and in medias.json
    song = hashlib.sha256(b"ID3-song-bytes").hexdigest()
    assert "Audio: song.mp3" in posts[0]["html"] and song in posts[0]["html"]
    assert [m["fileExt"] for m in json.loads((bundle / "medias.json").read_bytes())] == ["mp3"]
    everything = b"".join(p.read_bytes() for p in bundle.rglob("*") if p.is_file())
    assert b"zanzibar" not in everything  # in no file of the bundle, content.sqlite and its FTS index included
    withheld = [i for i in json.loads((bundle / "worker-issues.json").read_bytes())["issues"]
                if i["kind"] == "withheld"]
    assert sorted(i["path"] for i in withheld) == ["post:2", "post:3"]
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    assert manifest["counts"]["issues"] == len({(i.stage, i.path, i.message) for i in issues}) >= 2
