"""Tier 3: the tasks that start with the `source` stage, end to end through the HTTP API with real worker processes.

WordPress import (media from a real local HTTP server, push to a real git smart-HTTP server, deploy to SeaweedFS),
hostile WXR files, projects written by a local OpenAI-compatible chat server, and repositories made by a local
GitHub API from a template. Tokens arrive the ways clients send them (in a push URL, as `githubToken`/`gitToken`)
and must never show up in job state or callbacks.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dulwich.repo import Repo
from PIL import Image

from pipeline.markdown.frontmatter import split_frontmatter
from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore
from pipeline.stores.jobs_redis import RedisJobStore
from tests.conftest import GIT_TOKEN as TOKEN
from tests.conftest import ApiServer, CallbackServer, Workers
from tests.e2e.api_jobs import callback_of, finished, job_json, start_services, submit_process
from tests.e2e.git_remote import clone_back, files_of, head_of_main, remote_refs, with_token
from tests.e2e.s3_bucket import keys_under, on_s3, s3_json, s3_settings
from tests.fakes.github_api_server import GitHubApiServer
from tests.fakes.gitserver import GitHttpServer
from tests.fakes.openai_server import OpenAIServer
from tests.fakes.wordpress_site import BILLION_LAUGHS, UPLOADS, MediaServer, item, wxr

pytestmark = pytest.mark.e2e

API_KEY = "sk-e2e-import-key"
CHAT = "/v1/chat/completions"
ORG = "org-e2e"
BRIEF = "A small wiki about keeping bees in a city garden."


def image_bytes(fmt: str, size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format=fmt)
    return out.getvalue()


DAWN = image_bytes("JPEG", (64, 48), (200, 120, 40))
COVER = image_bytes("PNG", (40, 30), (20, 90, 160))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ------------------------------------------------------------------------------------------------ wp-import


def export_xml(base: str) -> bytes:
    """Two published posts (one with an image and a dead image, one with a featured image), a page, a draft."""
    dawn = f"{base}{UPLOADS}/dawn.jpg"
    gone = f"{base}{UPLOADS}/gone.png"
    harbour = ("<!-- wp:paragraph -->\n<p>The boats come in <strong>early</strong>.</p>\n<!-- /wp:paragraph -->\n\n"
               f'<!-- wp:image -->\n<figure class="wp-block-image"><img src="{dawn}" alt="Dawn"/></figure>\n'
               "<!-- /wp:image -->\n\n"
               f'<!-- wp:image -->\n<figure class="wp-block-image"><img src="{gone}" alt="Gone"/></figure>\n'
               "<!-- /wp:image -->")
    items = [
        item(10, "post", "publish", title="Harbour at Dawn", slug="harbour-dawn", content=harbour,
             categories=(("category", "harbour", "Harbour"), ("post_tag", "boats", "boats"))),
        item(11, "post", "publish", title="Fish Market", slug="fish-market",
             content="<p>Fresh fish every <em>Tuesday</em>.</p>", date_gmt="2023-01-06 08:00:00",
             meta=(("_thumbnail_id", "21"),)),
        item(12, "page", "publish", title="About", slug="about", content="<h2>Who</h2>\n\nA harbour diary."),
        item(13, "post", "draft", title="Unfinished Thoughts", content="<p>Not ready.</p>",
             date="2023-02-01 09:30:00", date_gmt="0000-00-00 00:00:00"),
        item(14, "post", "publish", title="Members only", slug="members", content="<p>quokkasecret words</p>",
             password="letmein"),
        item(15, "post", "private", title="Diary", slug="diary", content="<p>quokkaprivate words</p>"),
        item(20, "attachment", "inherit", title="dawn", slug="dawn", attachment_url=dawn),
        item(21, "attachment", "inherit", title="cover", slug="cover", attachment_url=f"{base}{UPLOADS}/cover.png"),
        item(22, "attachment", "inherit", title="gone", slug="gone", attachment_url=gone),
    ]
    return wxr(base, "\n".join(items))


def test_wp_import_through_process_pushes_deploys_and_keeps_the_token_out(
        settings: Settings, workers: Workers, store: JobStore, tmp_path: Path, s3_server: Any,
        remote: GitHttpServer, api_factory: Callable[[Settings], ApiServer],
        callback_server: Callable[..., CallbackServer]) -> None:
    media = MediaServer({f"{UPLOADS}/dawn.jpg": DAWN, f"{UPLOADS}/cover.png": COVER})
    try:
        settings, s3, bucket, project = on_s3(settings, s3_server)
        api, cb = start_services(settings, workers, api_factory, callback_server)
        url = remote.url_for("site.git")
        submit_process(api, "wp-1", "wp-import", cb.url,
                       {"wpXml": b64(export_xml(media.base)), "projectId": project, "orgId": ORG,
                        "remoteUrl": with_token(url), "skipEmbeddings": True})
        job = finished(store, "wp-1", JobStatus.COMPLETED)
    finally:
        media.stop()

    # the token travelled in the push URL: it became a secret, and the stored spec keeps the bare URL
    assert job.spec.options["remoteUrl"] == url
    view, raw_view = job_json(api, "wp-1")
    assert TOKEN not in raw_view
    summary = job.stage("source").summary
    assert summary["remote"] == url and summary["kind"] == "git-tree"
    assert (summary["import"]["posts"], summary["import"]["pages"], summary["import"]["drafts"]) == (2, 1, 1)
    assert summary["import"]["attachmentsDownloaded"] == 2 and summary["import"]["attachmentsFailed"] == 1
    assert sorted(media.requests) == sorted([f"{UPLOADS}/dawn.jpg", f"{UPLOADS}/cover.png", f"{UPLOADS}/gone.png"])

    # what was pushed, read back from the git server
    back = clone_back(url, tmp_path / "back")
    head = head_of_main(back)
    assert head.id.decode() == summary["commit"] == job.result["commit"]  # type: ignore[index]
    assert head.message.strip() == b"Initial import from WordPress"
    assert files_of(back) == {"posts/harbour-dawn/index.md", "posts/harbour-dawn/images/dawn.jpg",
                              "posts/fish-market/index.md", "posts/fish-market/images/cover.png",
                              "pages/about/index.md", "posts/_drafts/id-13/index.md"}
    assert (back / "posts/harbour-dawn/images/dawn.jpg").read_bytes() == DAWN
    fm, body = split_frontmatter((back / "posts/harbour-dawn/index.md").read_text(), "index.md")
    assert fm["title"] == "Harbour at Dawn" and fm["tags"] == ["boats"] and fm["draft"] is False
    assert "![Dawn](images/dawn.jpg)" in body and f"![Gone]({media.base}{UPLOADS}/gone.png)" in body
    fm, _ = split_frontmatter((back / "posts/fish-market/index.md").read_text(), "index.md")
    assert fm["coverImage"] == "images/cover.png"
    fm, _ = split_frontmatter((back / "posts/_drafts/id-13/index.md").read_text(), "index.md")
    assert fm["draft"] is True

    # the bundle went to SeaweedFS; the draft (`draft: true` under _drafts/) is left out of it and counted
    info = job.result["publishInfo"]  # type: ignore[index]
    assert info["published"] is True and info["failedUploads"] == 0
    assert info["r2ContentPath"] == f"projects/{project}/wp-1/"
    posts = s3_json(s3, bucket, f"projects/{project}/wp-1/posts.json")
    by_slug = {p["slug"]: p for p in posts}
    assert set(by_slug) == {"harbour-dawn", "fish-market", "about"}
    assert job.result["counts"]["drafts"] == 1  # type: ignore[index]
    assert by_slug["harbour-dawn"]["originalFilePath"] == "posts/harbour-dawn/index.md"
    dawn_hash = hashlib.sha256(DAWN).hexdigest()
    assert f"/_repo/medias/{dawn_hash}-lg.webp" in by_slug["harbour-dawn"]["html"]
    stored = keys_under(s3, bucket, f"projects/{project}/")
    assert f"projects/{project}/_shared/medias/{dawn_hash}-lg.webp" in stored
    cover_hash = hashlib.sha256(COVER).hexdigest()
    assert any(k.startswith(f"projects/{project}/_shared/medias/{cover_hash}-") for k in stored)

    # the dead attachment is an issue of the job, from the source stage
    dead = [i for i in view["issues"] if "gone.png" in i["message"]]
    assert len(dead) == 1 and "404" in dead[0]["message"] and dead[0]["stage"] == "source", view["issues"]
    assert dead[0]["path"] == "posts/harbour-dawn/index.md"

    # one callback, completed, and the token appears nowhere in its bytes
    payload, raw = callback_of(cb, "wp-1")
    assert payload["status"] == "completed" and payload["result"]["publishInfo"]["projectId"] == project
    assert TOKEN.encode() not in raw and all(TOKEN.encode() not in req["body"] for req in cb.requests)

    # private and password-protected posts are in neither the repository nor the bundle (nor its FTS index)
    assert summary["import"]["withheld"] == 2
    assert not any("quokka" in (back / rel).read_text() for rel in files_of(back) if rel.endswith(".md"))
    sqlite = s3.get_object(Bucket=bucket, Key=f"projects/{project}/wp-1/content.sqlite")["Body"].read()
    assert b"quokka" not in sqlite and b"quokka" not in json.dumps(posts).encode()
    # every issue of the job reaches the result, the callback, the manifest and the issue files
    issues = store.issues("wp-1")
    assert len(issues) >= 3  # the dead image and the two withheld posts, at least
    assert job.result["counts"]["issues"] == len(issues) == payload["result"]["counts"]["issues"]  # type: ignore[index]
    manifest = s3_json(s3, bucket, f"projects/{project}/wp-1/manifest.json")
    assert manifest["counts"]["issues"] == len(issues)
    worker_issues = s3_json(s3, bucket, f"projects/{project}/wp-1/worker-issues.json")["issues"]
    processor_issues = s3_json(s3, bucket, f"projects/{project}/wp-1/processor-issues.json")["issues"]
    assert len(worker_issues) + len(processor_issues) == len(issues)
    assert {i["path"] for i in worker_issues if i["kind"] == "withheld"} == {"post:14", "post:15"}

    # a second import to the same remote commits on top of the first (a new root commit would be refused)
    media2 = MediaServer({f"{UPLOADS}/dawn.jpg": DAWN, f"{UPLOADS}/cover.png": COVER})
    try:
        again = export_xml(media2.base).replace(b"Fresh fish every", b"Fresh fish on")
        submit_process(api, "wp-2", "wp-import", cb.url,
                       {"wpXml": b64(again), "projectId": project, "orgId": ORG,
                        "remoteUrl": with_token(url), "skipEmbeddings": True})
        second = finished(store, "wp-2", JobStatus.COMPLETED)
    finally:
        media2.stop()
    back2 = clone_back(url, tmp_path / "back2")
    head2 = head_of_main(back2)
    assert head2.id.decode() == second.stage("source").summary["commit"] != head.id.decode()
    assert head2.parents == [head.id]
    assert "Fresh fish on" in (back2 / "posts/fish-market/index.md").read_text()


@pytest.mark.parametrize("via", ["jobs", "process"])
def test_hostile_wxr_fails_at_source_and_leaves_nothing(
        settings: Settings, workers: Workers, store: JobStore, tmp_path: Path, s3_server: Any,
        remote: GitHttpServer, api_factory: Callable[[Settings], ApiServer],
        callback_server: Callable[..., CallbackServer], via: str) -> None:
    settings, s3, bucket, project = on_s3(settings, s3_server)
    api, cb = start_services(settings, workers, api_factory, callback_server)
    url = remote.url_for("site.git")
    hostile = {
        "laughs": (BILLION_LAUGHS, "&lol9;"),
        "xxe": ('<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>', "&xxe;"),
    }
    started = time.monotonic()
    for name, (doctype, title) in hostile.items():
        xml = wxr("https://harbour.example", item(1, "post", "publish", title="x", slug="x", content="x"),
                  doctype=doctype).replace(b"<title><![CDATA[x]]></title>", f"<title>{title}</title>".encode())
        data = {"wpXml": b64(xml), "projectId": project, "orgId": ORG, "remoteUrl": url, "gitToken": TOKEN,
                "skipEmbeddings": True}
        job_id = f"hostile-{name}-{via}"
        if via == "process":
            submit_process(api, job_id, "wp-import", cb.url, data)
        else:
            r = api.client.post("/jobs", json={"task": "wp-import", "job_id": job_id, "project_id": project,
                                               "org_id": ORG, "callback_url": cb.url, "options": data})
            assert r.status_code == 202, r.text
        job = finished(store, job_id, JobStatus.FAILED)
        assert job.error is not None and job.error["stage"] == "source", job.error
        assert "refused WXR file: it contains a DTD" in job.error["message"]
        assert job.stage("source").attempts == 1  # permanent: not retried
        assert all(s.status.value == "pending" for s in job.stages if s.name not in ("source", "notify"))
        payload, raw = callback_of(cb, job_id)
        assert payload["status"] == "failed" and "DTD" in payload["error"]
        assert b"root:" not in raw and TOKEN.encode() not in raw
    assert time.monotonic() - started < 60
    assert remote_refs(tmp_path / "remote.git") == {}  # nothing pushed
    assert keys_under(s3, bucket, f"projects/{project}/") == {}  # no bundle


# ------------------------------------------------------------------------------------------------ brief


TOPICS = ["Getting Started", "Hive Types", "Bee Health", "Honey Harvest", "City Rules", "Seasonal Calendar"]


def bee_project(count: int) -> str:
    """A model reply: `count` files, each linking the next one by title (a ring)."""
    titles = (TOPICS * 2)[:count]
    files = [{"filename": f"bees/{t.lower().replace(' ', '-')}-{i}.md",
              "frontmatter": {"title": f"{t} {i}", "tags": ["bees"]},
              "content": f"About {t.lower()}.\n\nNext: [[{titles[(i + 1) % count]} {(i + 1) % count}]].\n"}
             for i, t in enumerate(titles)]
    return json.dumps(files)


def test_projects_from_a_brief(settings: Settings, workers: Workers, store: JobStore, tmp_path: Path, s3_server: Any,
                               remote: GitHttpServer, api_factory: Callable[[Settings], ApiServer],
                               callback_server: Callable[..., CallbackServer]) -> None:
    with OpenAIServer(api_key=API_KEY) as llm:
        settings, s3, bucket, project = on_s3(settings.with_(openai_base_url=llm.base_url, openai_api_key=API_KEY,
                                                             openai_chat_model="chat-e2e"), s3_server)
        api, cb = start_services(settings, workers, api_factory, callback_server)
        url = remote.url_for("site.git")

        def chats() -> int:
            return len(llm.requests_to(CHAT))

        # 1. a good reply: six files, committed, pushed with the token from the URL
        llm.queue_replies(bee_project(6))
        submit_process(api, "brief-good", "generate-project-from-brief", cb.url,
                       {"brief": BRIEF, "remoteUrl": with_token(url)})
        job = finished(store, "brief-good", JobStatus.COMPLETED)
        assert chats() == 1
        source = job.result["stages"]["source"]  # type: ignore[index]
        assert source["kind"] == "git-tree" and source["files"] == 6 and source["remote"] == url
        (req,) = llm.requests_to(CHAT)
        assert req.body["model"] == "chat-e2e" and BRIEF in req.body["messages"][1]["content"]
        assert req.headers["authorization"] == f"Bearer {API_KEY}"
        back = clone_back(url, tmp_path / "brief-back")
        assert head_of_main(back).id.decode() == source["commit"]
        assert len(files_of(back)) == 6
        assert "[[Hive Types 1]]" in (back / "bees/getting-started-0.md").read_text()
        payload, raw = callback_of(cb, "brief-good")
        assert payload["status"] == "completed" and payload["result"]["stages"]["source"]["files"] == 6
        assert TOKEN.encode() not in raw and API_KEY.encode() not in raw

        # 2. an invalid reply (three files) then a good one; through the native API, pushed to another repository
        # whose URL carries the token in `options`
        Repo.init_bare(str(tmp_path / "other.git"), mkdir=True, default_branch=b"main").close()
        other = remote.add_repo("other.git", tmp_path / "other.git")
        llm.queue_replies(bee_project(3), bee_project(5))
        r = api.client.post("/jobs", json={"task": "generate-project-from-brief", "job_id": "brief-retry",
                                           "callback_url": cb.url,
                                           "options": {"brief": BRIEF, "remoteUrl": with_token(other)}})
        assert r.status_code == 202, r.text
        job = finished(store, "brief-retry", JobStatus.COMPLETED)
        assert chats() == 3
        assert job.spec.options["remoteUrl"] == other
        assert job.stage("source").summary["files"] == 5 and job.stage("source").summary["remote"] == other
        correction = llm.requests_to(CHAT)[-1].body["messages"][-1]["content"]
        assert "expected between 5 and 10 files, got 3" in correction
        again = clone_back(other, tmp_path / "other-back")
        assert head_of_main(again).id.decode() == job.stage("source").summary["commit"]
        assert len(files_of(again)) == 5

        # 3. hopeless: three unusable replies fail the job, naming what was wrong with the last one
        llm.queue_replies("no json here", bee_project(2), "[]")
        submit_process(api, "brief-hopeless", "generate-project-from-brief", cb.url, {"brief": BRIEF})
        job = finished(store, "brief-hopeless", JobStatus.FAILED)
        assert chats() == 6
        assert job.error is not None and job.error["stage"] == "source"
        assert "no valid project in 3 replies" in job.error["message"]
        assert "expected between 5 and 10 files, got 0" in job.error["message"]
        payload, _ = callback_of(cb, "brief-hopeless")
        assert payload["status"] == "failed" and "no valid project" in payload["error"]

        # 4. generate-and-deploy-project: the generated posts, links resolved, on SeaweedFS
        llm.queue_replies(bee_project(7))
        submit_process(api, "brief-deploy", "generate-and-deploy-project", cb.url,
                       {"brief": BRIEF, "projectId": project, "orgId": ORG, "skipEmbeddings": True})
        job = finished(store, "brief-deploy", JobStatus.COMPLETED)
        assert chats() == 7
        info = job.result["publishInfo"]  # type: ignore[index]
        assert info["published"] is True and info["failedUploads"] == 0
        posts = s3_json(s3, bucket, f"projects/{project}/brief-deploy/posts.json")
        assert len(posts) == 7
        by_title = {p["title"]: p for p in posts}
        hashes = {p["hash"] for p in posts}
        for post in posts:
            assert post["links"], post["title"]
            assert set(post["links"]) <= hashes and post["hash"] not in post["links"]
            assert "#broken-link" not in post["html"], post["html"]
        assert by_title["Getting Started 0"]["links"] == [by_title["Hive Types 1"]["hash"]]
        assert f'href="/_repo/notes/{by_title["Hive Types 1"]["slug"]}"' in by_title["Getting Started 0"]["html"]


# ------------------------------------------------------------------------------------------------ template


def test_repositories_from_a_github_template(settings: Settings, workers: Workers, store: JobStore, tmp_path: Path,
                                             api_factory: Callable[[Settings], ApiServer],
                                             callback_server: Callable[..., CallbackServer]) -> None:
    github = GitHubApiServer(tmp_path / "github", token=TOKEN, ready_after=0.3)
    try:
        github.add_template("tmpl/site-template", {
            "README.md": b"# template\n",
            "posts/hello.md": b"---\ntitle: Hello\n---\nHello, see [[Second]].\n",
            "posts/second.md": b"---\ntitle: Second\n---\nBack to [[Hello]].\n",
        })
        settings = settings.with_(github_api_url=github.url)
        api, cb = start_services(settings, workers, api_factory, callback_server)
        template = "https://github.com/tmpl/site-template"

        # 1. new-repo-from-template with the token as `githubToken`
        submit_process(api, "tmpl-new", "new-repo-from-template", cb.url,
                       {"templateRepoUrl": template, "newRepoName": "my-site", "githubToken": TOKEN})
        job = finished(store, "tmpl-new", JobStatus.COMPLETED)
        assert "githubToken" not in job.spec.options
        source = job.stage("source").summary
        assert source["kind"] == "url" and source["fullName"] == "octo/my-site"
        assert source["url"] == github.clone_url("octo/my-site") and len(source["commit"]) == 40
        assert job.stage("fetch").summary["commit"] == source["commit"] and job.stage("fetch").summary["files"] == 3
        (call,) = github.requests
        assert call.path == "/repos/tmpl/site-template/generate" and call.headers["Authorization"] == f"Bearer {TOKEN}"
        assert call.body["name"] == "my-site"
        assert TOKEN not in job_json(api, "tmpl-new")[1]
        payload, raw = callback_of(cb, "tmpl-new")
        assert payload["status"] == "completed" and TOKEN.encode() not in raw

        # 2. process-from-template, the token under both names: a bundle of the template's posts
        submit_process(api, "tmpl-process", "process-from-template", cb.url,
                       {"templateRepoUrl": template, "newRepoName": "my-site-2", "githubToken": TOKEN,
                        "gitToken": TOKEN, "skipEmbeddings": True})
        job = finished(store, "tmpl-process", JobStatus.COMPLETED)
        assert "githubToken" not in job.spec.options and "gitToken" not in job.spec.options
        assert len(github.requests) == 2 and github.requests[1].body["name"] == "my-site-2"
        assert "octo/my-site-2" in github.repos
        dist = Path(job.result["distFolder"])  # type: ignore[index]
        posts = json.loads((dist / "posts.json").read_text())
        by_slug = {p["slug"]: p for p in posts}
        assert set(by_slug) == {"hello", "second"}  # README is not a post
        assert by_slug["hello"]["links"] == [by_slug["second"]["hash"]]
        assert by_slug["second"]["links"] == [by_slug["hello"]["hash"]]
        assert TOKEN not in job_json(api, "tmpl-process")[1]
        payload, raw = callback_of(cb, "tmpl-process")
        assert payload["status"] == "completed" and TOKEN.encode() not in raw
    finally:
        github.stop()


def test_a_large_export_is_kept_out_of_redis(settings: Settings, workers: Workers, store: RedisJobStore,
                                              s3_server: Any,
                                              api_factory: Callable[[Settings], ApiServer],
                                              callback_server: Callable[..., CallbackServer]) -> None:
    """A big `wpXml` goes to the artifact store at submission; the job state keeps its key only."""
    paragraphs = "".join(f"<p>Paragraph {n} of a long archive post about the garden in spring.</p>"
                         for n in range(2000))
    xml = wxr("https://blog.example.org", item(7, "post", "publish", title="Archive", slug="archive",
                                                content=paragraphs))
    assert len(b64(xml)) > 64 * 1024
    settings = s3_settings(settings, s3_server)
    api, cb = start_services(settings, workers, api_factory, callback_server)
    submit_process(api, "big-wp", "wp-import", cb.url, {"wpXml": b64(xml), "projectId": "p-big",
                                                        "skipEmbeddings": True})
    stored = store.get("big-wp").spec.options["wpXml"]
    assert isinstance(stored, dict) and stored["artifact"].startswith("inputs/") and stored["bytes"] > 64 * 1024
    raw = store.r.hget(store.keys.job("big-wp"), "spec") or ""
    assert len(raw) < 4096  # the export itself is not in Redis
    job = finished(store, "big-wp", JobStatus.COMPLETED)
    assert job.stage("parse").summary["posts"] == 1
