"""Pure tier: publish writes the bundle of CONTRACT §3 to a local folder, atomically, idempotently."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import PermanentError
from pipeline.models import Issue
from pipeline.stages import build_db, publish
from pipeline.stages.context import LocalContext
from pipeline.stages.parse import issue_report
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.targets import local
from pipeline.targets.local import LocalFolderTarget
from tests.stages.test_build_db import CAT, DOG, H_HELLO, H_NOTES, H_PRIVET, M_CAT, M_DOG, make_ctx, write_job_inputs


def prepared(tmp_path: Path, job_id: str = "job-1", **spec: Any) -> LocalContext:
    """Inputs of fetch and parse, content.sqlite of build_db, and a publish context for `job_id`."""
    ctx = make_ctx(tmp_path, job_id, stage="publish", **spec)
    assert isinstance(ctx.artifacts, LocalArtifactStore)
    if not ctx.artifacts.exists(f"jobs/{job_id}/parse/result/posts.json"):
        write_job_inputs(ctx.artifacts, job_id)
        build_db.run(make_ctx(tmp_path, job_id, stage="build_db"))
    return ctx


def load(path: Path) -> Any:
    return json.loads(path.read_bytes())


def tree_bytes(root: Path, skip_manifest_time: bool = True) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "manifest.json" and skip_manifest_time:
                data = json.dumps({k: v for k, v in json.loads(data).items() if k != "createdAt"}).encode()
            out[p.relative_to(root).as_posix()] = data
    return out


def visible(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


def test_bundle_layout(tmp_path: Path) -> None:
    ctx = prepared(tmp_path)
    inputs = {name: ctx.artifacts.get_json(f"jobs/job-1/parse/result/{name}")
              for name in ("posts.json", "medias.json", "graph.json", "files-source.json", "processor-issues.json")}
    result = publish.run(ctx)
    out = tmp_path / "out"
    rev = out / "job-1"
    assert result.finished and result.summary["path"] == str(rev)
    assert visible(out) == ["job-1", "latest", "latest.json"]
    assert os.readlink(out / "latest") == "job-1"
    latest = load(out / "latest.json")
    assert latest["revision"] == "job-1" and latest["path"] == str(rev) and latest["publishedAt"].endswith("Z")

    posts = load(rev / "posts.json")
    assert posts == inputs["posts.json"]
    for post in posts:
        assert load(rev / "_posts" / "hash" / f"{post['hash']}.json") == post
        assert load(rev / "_posts" / "slug" / f"{post['slug']}.json") == post
    index = [{"slug": "hello", "hash": H_HELLO, "title": "Hello World", "colophon": "Set in Garamond"},
             {"slug": "privet", "hash": H_PRIVET, "title": "Привет", "colophon": None},
             {"slug": "notes", "hash": H_NOTES, "title": "notes", "colophon": None}]
    assert load(rev / "_posts/hash/index.json") == index == load(rev / "_posts/slug/index.json")
    assert load(rev / "posts-slug-map.json") == {"hello": H_HELLO, "privet": H_PRIVET, "notes": H_NOTES}
    assert load(rev / "posts-path-map.json") == {"hello.md": H_HELLO, "ru/privet.md": H_PRIVET,
                                                 "notes/index.md": H_NOTES}

    assert load(rev / "medias.json") == inputs["medias.json"]
    assert (rev / "_medias" / f"{M_CAT}.png").read_bytes() == CAT
    assert (rev / "_medias" / f"{M_DOG}.jpg").read_bytes() == DOG
    cat_url, dog_url = f"/_repo/medias/{M_CAT}.png", f"/_repo/medias/{M_DOG}.jpg"
    assert load(rev / "media-path-map.json") == {"img/cat.png": f"{M_CAT}.png", "img/dog.jpg": f"{M_DOG}.jpg"}
    assert load(rev / "media-path-url-map.json") == {"img/cat.png": cat_url, "img/dog.jpg": dog_url}
    assert load(rev / "media-path-hash-map.json") == {"img/cat.png": M_CAT, "img/dog.jpg": M_DOG}
    assert load(rev / "media-hash-url-map.json") == {M_CAT: cat_url, M_DOG: dog_url}

    assert load(rev / "graph.json") == inputs["graph.json"]
    assert load(rev / "files-source.json") == inputs["files-source.json"]
    assert load(rev / "processor-issues.json") == inputs["processor-issues.json"]
    assert load(rev / "worker-issues.json") == {"issues": [], "summary": {
        "totalIssues": 0, "errorCount": 0, "warningCount": 0, "infoCount": 0, "categoryCounts": {},
        "moduleCounts": {}}}
    assert (rev / "content.sqlite").read_bytes() == ctx.artifacts.get_bytes("jobs/job-1/build_db/content.sqlite")
    assert not (rev / "_vectra").exists()

    files = {p.relative_to(rev).as_posix(): p for p in rev.rglob("*") if p.is_file()}
    listed = load(rev / "files-dist.json")
    assert [f["path"] for f in listed] == sorted(set(files) - {"files-dist.json", "manifest.json"})
    for f in listed:
        assert f["size"] == files[f["path"]].stat().st_size
        assert f["filename"] == Path(f["path"]).name and f["folder"] == f["path"].split("/")[:-1]
    assert {"path": "content.sqlite", "filename": "content.sqlite", "extension": "sqlite",
            "size": files["content.sqlite"].stat().st_size, "folder": []} in listed

    manifest = load(rev / "manifest.json")
    assert {k: manifest[k] for k in ("revision", "jobId", "task", "projectId", "models")} == {
        "revision": "job-1", "jobId": "job-1", "task": "process-all", "projectId": None, "models": {}}
    # credentials of the source URL never reach the bundle
    assert manifest["source"] == {"commit": "abc123", "branch": "main", "url": "https://example.org/r.git"}
    assert manifest["counts"] == {"posts": 3, "medias": 2, "issues": 1}
    assert manifest["files"] == {rel: hashlib.sha256(p.read_bytes()).hexdigest()
                                 for rel, p in sorted(files.items()) if rel != "manifest.json"}
    assert result.summary["files"] == len(files)
    assert result.summary["bytes"] == sum(p.stat().st_size for p in files.values())
    # JSON is UTF-8, not \u escapes
    assert "Привет".encode() in (rev / "posts.json").read_bytes()


def test_media_prefix_option(tmp_path: Path) -> None:
    ctx = prepared(tmp_path, options={"mediaPrefix": "https://cdn.example.org/m/"})
    publish.run(ctx)
    urls = load(tmp_path / "out" / "job-1" / "media-hash-url-map.json")
    assert urls[M_CAT] == f"https://cdn.example.org/m/{M_CAT}.png"


def test_second_revision_switches_latest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    publish.run(prepared(tmp_path, "job-1"))
    first = tree_bytes(out / "job-1")
    publish.run(prepared(tmp_path, "job-2"))
    assert os.readlink(out / "latest") == "job-2"
    assert load(out / "latest.json")["revision"] == "job-2"
    assert visible(out) == ["job-1", "job-2", "latest", "latest.json"]
    assert tree_bytes(out / "job-1") == first  # the older revision stays whole
    # same input, other revision: only the manifest's identity differs
    a, b = tree_bytes(out / "job-1"), tree_bytes(out / "job-2")
    assert [k for k in a if a[k] != b[k]] == ["manifest.json"]


@pytest.mark.parametrize("exchange", [True, False])
def test_republish_same_revision_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               exchange: bool) -> None:
    if not exchange:  # the fallback for kernels or filesystems without RENAME_EXCHANGE
        monkeypatch.setattr(local, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    ctx = prepared(tmp_path)
    publish.run(ctx)
    before = tree_bytes(out / "job-1")
    (out / "job-1" / "stray-from-an-older-attempt.txt").write_text("x")
    publish.run(ctx)
    assert tree_bytes(out / "job-1") == before
    assert visible(out) == ["job-1", "latest", "latest.json"]
    assert os.readlink(out / "latest") == "job-1"


def test_crash_mid_write_leaves_previous_revision_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    publish.run(prepared(tmp_path, "job-1"))
    first = tree_bytes(out / "job-1")
    real_json = publish.BundleWriter.json

    def crash_on_graph(self: publish.BundleWriter, rel: str, value: Any) -> None:
        if rel == "graph.json":
            raise RuntimeError("disk on fire")
        real_json(self, rel, value)

    monkeypatch.setattr(publish.BundleWriter, "json", crash_on_graph)
    for job in ("job-2", "job-1"):  # a new revision, and a re-publish of the live one
        with pytest.raises(RuntimeError, match="disk on fire"):
            publish.run(prepared(tmp_path, job))
        assert visible(out) == ["job-1", "latest", "latest.json"]
        assert os.readlink(out / "latest") == "job-1"
        assert load(out / "latest.json")["revision"] == "job-1"
        assert tree_bytes(out / "job-1") == first

    monkeypatch.setattr(publish.BundleWriter, "json", real_json)
    publish.run(prepared(tmp_path, "job-2"))
    assert os.readlink(out / "latest") == "job-2"


def test_leftovers_of_a_killed_attempt_are_swept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / ".staging-job-1-deadbeef" / "_posts").mkdir(parents=True)
    (out / ".old-job-1-deadbeef").mkdir()
    (out / ".staging-job-9-cafebabe").mkdir()  # another revision's attempt: not ours to remove
    publish.run(prepared(tmp_path))
    assert visible(out) == [".staging-job-9-cafebabe", "job-1", "latest", "latest.json"]


def test_vanished_media_is_an_issue_not_a_failure(tmp_path: Path) -> None:
    ctx = prepared(tmp_path)
    tree = ctx.artifacts.tree("jobs/job-1/fetch/tree")
    (tree / "img" / "dog.jpg").unlink()
    (tree / "img" / "cat.png").write_bytes(b"edited after parse")
    result = publish.run(ctx)
    rev = Path(result.summary["path"])
    assert [p for p in rev.rglob("*") if p.is_file() and "_medias" in p.parts] == []
    assert sorted((i.path, i.severity) for i in ctx.issues) == [("img/cat.png", "warning"),
                                                                ("img/dog.jpg", "warning")]
    report = load(rev / "worker-issues.json")
    assert report["summary"]["totalIssues"] == 2 and report["summary"]["warningCount"] == 2
    assert {i["path"] for i in report["issues"]} == {"img/cat.png", "img/dog.jpg"}
    assert load(rev / "manifest.json")["counts"]["issues"] == 3
    assert load(rev / "media-path-hash-map.json") == {"img/cat.png": M_CAT, "img/dog.jpg": M_DOG}


def test_media_link_out_of_the_repository_is_not_published(tmp_path: Path) -> None:
    ctx = prepared(tmp_path)
    tree = ctx.artifacts.tree("jobs/job-1/fetch/tree")
    secret = tmp_path / "host-file.png"
    secret.write_bytes(CAT)  # same bytes, so only the link check can stop it
    (tree / "img" / "cat.png").unlink()
    (tree / "img" / "cat.png").symlink_to(secret)
    rev = Path(publish.run(ctx).summary["path"])
    assert not (rev / "_medias" / f"{M_CAT}.png").exists()
    assert (rev / "_medias" / f"{M_DOG}.jpg").exists()
    assert [(i.path, i.severity) for i in ctx.issues] == [("img/cat.png", "error")]


def test_unsafe_and_colliding_slugs(tmp_path: Path) -> None:
    ctx = prepared(tmp_path)
    posts = ctx.artifacts.get_json("jobs/job-1/parse/result/posts.json")
    posts[0]["slug"] = "../../escape"
    posts[1]["slug"] = "index"
    posts[2]["slug"] = "blog/notes"
    ctx.artifacts.put_json("jobs/job-1/parse/result/posts.json", posts)
    rev = Path(publish.run(ctx).summary["path"])
    assert not (tmp_path / "escape.json").exists() and not (rev / "escape.json").exists()
    assert load(rev / "_posts/slug/blog/notes.json")["hash"] == H_NOTES
    assert isinstance(load(rev / "_posts/slug/index.json"), list)
    assert load(rev / "_posts/hash" / f"{H_PRIVET}.json")["slug"] == "index"
    assert sorted(i.path for i in ctx.issues) == ["hello.md", "ru/privet.md"]


def test_worker_issues_of_other_stages_are_included(tmp_path: Path) -> None:
    ctx = prepared(tmp_path)
    other = [{"stage": "embed", "path": "hello.md", "message": "no model", "severity": "error", "kind": "item"}]
    ctx.artifacts.put_json(ctx.key("worker-issues.json"), other)
    rev = Path(publish.run(ctx).summary["path"])
    report = load(rev / "worker-issues.json")
    assert report["issues"] == other
    assert report["summary"]["errorCount"] == 1 and report["summary"]["moduleCounts"] == {"embed": 1}


def test_output_from_spec_and_bad_revision(tmp_path: Path) -> None:
    ctx = prepared(tmp_path, output=str(tmp_path / "elsewhere"))
    assert publish.run(ctx).summary["path"] == str(tmp_path / "elsewhere" / "job-1")
    with pytest.raises(PermanentError):
        LocalFolderTarget(tmp_path).revision_path("../x")
    with pytest.raises(PermanentError):
        LocalFolderTarget(tmp_path).revision_path("latest")


def test_issues_recorded_by_any_stage_reach_the_issue_files_and_counts_once(tmp_path: Path) -> None:
    """The source stage's issues (a wp-import's dead media, withheld private posts) live only in the job's list;
    they reach worker-issues.json and the manifest's count, and an issue recorded twice is listed once."""
    ctx = prepared(tmp_path)
    dead = Issue("source", "posts/a/index.md", "media not downloaded, original URL kept: https://h/x.png",
                 "warning", "attachment")
    withheld = Issue("source", "post:2", "private post not imported", "info", "withheld")
    ctx.issues.extend([dead, withheld, dead])
    broken = Issue("parse", "hello.md", "broken link: nowhere", "warning", "broken-link")
    ctx.artifacts.put_json("jobs/job-1/parse/result/processor-issues.json", issue_report([broken.to_json()]))
    ctx.issues.append(broken)  # parse records its own in the job too: listed in processor-issues.json only
    rev = Path(publish.run(ctx).summary["path"])
    report = load(rev / "worker-issues.json")
    assert report["issues"] == [dead.to_json(), withheld.to_json()]
    assert report["summary"]["moduleCounts"] == {"source": 2}
    assert load(rev / "processor-issues.json")["issues"] == [broken.to_json()]
    assert load(rev / "manifest.json")["counts"]["issues"] == 3
