"""Tier 3: deploy to a real S3-compatible server (SeaweedFS) through the API, and read every key back."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.models import JobSpec, JobStatus, StageStatus
from pipeline.settings import Settings
from pipeline.stages import upload
from pipeline.stages.context import LocalContext, run_to_end
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.jobs import JobStore, JobView
from pipeline.targets.bucket_layout import object_keys
from tests.conftest import CORPORA, DEMO_REPO, ApiServer, CallbackServer, Workers, wait_job
from tests.e2e.api_jobs import start_services
from tests.e2e.s3_bucket import keys_under, on_s3, s3_settings

pytestmark = pytest.mark.e2e


def latest(s3: Any, bucket: str, project: str) -> dict[str, Any]:
    body = s3.get_object(Bucket=bucket, Key=f"projects/{project}/latest.json")["Body"].read()
    value: dict[str, Any] = json.loads(body)
    return value


def deploy(api: ApiServer, store: JobStore, job_id: str, repo: Path, project: str, **options: Any) -> JobView:
    r = api.client.post("/jobs", json={"task": "deploy-repo", "source": str(repo), "job_id": job_id,
                                       "project_id": project, "org_id": "org-1", "options": options})
    assert r.status_code == 202, r.text
    job = wait_job(store, job_id, timeout=240)
    assert job.status == JobStatus.COMPLETED, job.error
    return job


def test_deploy_layout_skip_unchanged_upload_only_changes_and_rollback(
        settings: Settings, workers: Workers, store: JobStore, tmp_path: Path, s3_server: Any,
        api_factory: Callable[[Settings], ApiServer], callback_server: Callable[..., CallbackServer]) -> None:
    settings, s3, bucket, project = on_s3(settings, s3_server)
    repo = tmp_path / "repo"
    shutil.copytree(DEMO_REPO, repo)

    # 1. the original's request shape; the callback carries publishInfo
    api, cb = start_services(settings, workers, api_factory, callback_server)
    body = {"jobId": "rev-1", "task": "deploy-repo", "callbackUrl": cb.url,
            "data": {"repoInfo": {"path": str(repo)}, "projectId": project, "orgId": "org-1"}}
    assert api.client.post("/process", json=body).status_code == 202
    first = wait_job(store, "rev-1", timeout=240)
    assert first.status == JobStatus.COMPLETED, first.error
    info = first.result["publishInfo"] if first.result else {}
    assert info["published"] is True and info["projectId"] == project and info["orgId"] == "org-1"
    assert info["failedUploads"] == 0 and info["skippedUploads"] == 0
    assert info["successfulUploads"] == info["totalFiles"] > 20
    assert info["r2ContentPath"] == f"projects/{project}/rev-1/"
    payload = json.loads(cb.accepted[-1]["body"])
    assert payload["status"] == "completed" and payload["result"]["publishInfo"]["totalFiles"] == info["totalFiles"]

    # every file of the bundle is at its key (CONTRACT §4) with its hash and content type
    stored = keys_under(s3, bucket, f"projects/{project}/")
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"projects/{project}/rev-1/manifest.json")["Body"].read())
    expected = {key: sha for rel, sha in manifest["files"].items() for key in object_keys(rel, project, "rev-1")}
    expected[f"projects/{project}/rev-1/manifest.json"] = None
    expected[f"projects/{project}/rev-1/files-dist.json"] = None
    assert set(stored) == set(expected) | {f"projects/{project}/latest.json"}
    for key, sha in expected.items():
        obj = s3.get_object(Bucket=bucket, Key=key)
        data = obj["Body"].read()
        assert obj["Metadata"]["contenthash"] == hashlib.sha256(data).hexdigest(), key
        assert obj["Metadata"]["projectid"] == project and obj["Metadata"]["jobid"] == "rev-1"
        if sha is not None:
            assert hashlib.sha256(data).hexdigest() == sha, key
        ctype = obj["ContentType"]
        if key.endswith(".json"):
            assert ctype.startswith("application/json"), key
        elif key.endswith(".webp"):
            assert ctype == "image/webp", key
        elif key.endswith(".sqlite"):
            assert ctype == "application/octet-stream", key
    posts = json.loads(s3.get_object(Bucket=bucket, Key=f"projects/{project}/rev-1/posts.json")["Body"].read())
    for post in posts:
        assert f"projects/{project}/_shared/posts/{post['hash']}.json" in stored
        assert f"projects/{project}/rev-1/_posts/slug/{post['slug']}.json" in stored
    assert any(k.startswith(f"projects/{project}/_shared/medias/") and k.endswith("-lg.webp") for k in stored)
    assert latest(s3, bucket, project)["rev"] == "rev-1"

    # 2. unchanged: nothing is uploaded and the live revision stays
    second = deploy(api, store, "rev-2", repo, project)
    info2 = second.result["publishInfo"] if second.result else {}
    assert info2["successfulUploads"] == 0 and info2["skippedUploads"] == info2["totalFiles"] == info["totalFiles"]
    assert latest(s3, bucket, project)["rev"] == "rev-1"
    assert not keys_under(s3, bucket, f"projects/{project}/rev-2/")

    # 3. one post edited: that post's shared object and the revision's own files, nothing else
    post = repo / "welcome.md"
    post.write_text(post.read_text() + "\n\nOne more paragraph about deploying.\n")
    before = keys_under(s3, bucket, f"projects/{project}/_shared/")
    third = deploy(api, store, "rev-3", repo, project)
    info3 = third.result["publishInfo"] if third.result else {}
    after = keys_under(s3, bucket, f"projects/{project}/_shared/")
    new_shared = set(after) - set(before)
    assert len(new_shared) == 1 and next(iter(new_shared)).startswith(f"projects/{project}/_shared/posts/")
    rev3 = keys_under(s3, bucket, f"projects/{project}/rev-3/")
    # Posts that link to the edited one or that it links to name it by hash (`links`, `backlinks`), so
    # their entries change with it; every other shared object is skipped.
    rewritten = {k for k, v in after.items() if k in before and v["ETag"] != before[k]["ETag"]}
    posts3 = json.loads(s3.get_object(Bucket=bucket, Key=f"projects/{project}/rev-3/posts.json")["Body"].read())
    edited = next(p for p in posts3 if p["originalFilePath"] == "welcome.md")
    neighbours = {p["hash"] for p in posts3 if edited["hash"] in (p.get("links") or []) + (p.get("backlinks") or [])}
    assert {k.rsplit("/", 1)[1].removesuffix(".json") for k in rewritten} <= neighbours
    assert info3["successfulUploads"] == len(rev3) + 1 + len(rewritten)
    assert info3["skippedUploads"] == info3["totalFiles"] - info3["successfulUploads"]
    assert latest(s3, bucket, project)["rev"] == "rev-3"
    # only the edited post was embedded again: its post vector and its changed passages
    embed = third.stage("embed_text").summary
    assert embed["posts"] >= 5 and 1 <= embed["embedded"] <= 3, embed

    # 4. rollback to the first revision, through the API; an unknown revision is a 404
    r = api.client.post(f"/projects/{project}/rollback", json={"rev": "rev-1"})
    assert r.status_code == 200, r.text
    assert latest(s3, bucket, project)["rev"] == "rev-1"
    assert api.client.get(f"/projects/{project}").json()["latest"]["rev"] == "rev-1"
    assert api.client.post(f"/projects/{project}/rollback", json={"rev": "nope"}).status_code == 404

    # 5. a new machine with cold caches: the live revision's vectors and the bucket's variants are reused
    workers.stop_all()
    cold = settings.with_(artifacts=str(tmp_path / "cold-artifacts"))
    workers.start(cold)
    fourth = deploy(api, store, "rev-4", repo, project)
    existing = fourth.stage("existing").summary
    assert existing["rev"] == "rev-1" and existing["database"] is True and existing["medias"] >= 1
    embed4 = fourth.stage("embed_text").summary
    assert 1 <= embed4["embedded"] <= 3 and embed4["cached"] == embed4["posts"] + embed4["chunks"] - embed4["embedded"]
    assert not (tmp_path / "cold-artifacts" / "cache" / "variants").exists()  # nothing was resized
    medias4 = json.loads(s3.get_object(Bucket=bucket, Key=f"projects/{project}/rev-4/medias.json")["Body"].read())
    assert all(m["sizes"] for m in medias4 if m["fileExt"] in ("png", "jpg", "jpeg"))
    assert latest(s3, bucket, project)["rev"] == "rev-4"
    dist4 = json.loads(s3.get_object(Bucket=bucket, Key=f"projects/{project}/rev-4/files-dist.json")["Body"].read())
    assert any(f["path"].endswith("-lg.webp") for f in dist4)  # listed, though this machine never held them

    # 6. cold again and unchanged: recognised as the live revision, nothing uploaded
    workers.stop_all()
    workers.start(settings.with_(artifacts=str(tmp_path / "cold-again")))
    fifth = deploy(api, store, "rev-5", repo, project)
    info5 = fifth.result["publishInfo"] if fifth.result else {}
    assert fifth.stage("upload").summary["unchanged"] is True and info5["successfulUploads"] == 0
    assert latest(s3, bucket, project)["rev"] == "rev-4"


def test_latest_only_moves_forward_in_submission_order(settings: Settings, tmp_path: Path, s3_server: Any) -> None:
    """An older submission that finishes last stores its revision but never replaces the newer one."""
    settings, s3, bucket, project = on_s3(settings, s3_server)
    store = LocalArtifactStore(tmp_path / "artifacts")

    def run_upload(job_id: str, seq: int, text: str) -> None:
        dist = tmp_path / f"dist-{job_id}"
        dist.mkdir()
        (dist / "posts.json").write_text(json.dumps([{"title": text}]))
        (dist / "manifest.json").write_text(json.dumps({"revision": job_id, "files": {"posts.json": text}}))
        spec = JobSpec(job_id=job_id, task="publish-r2", project_id=project, org_id="o",
                       options={"assets": {"distFolder": str(dist)}})
        ctx = LocalContext(job_id=job_id, stage="upload", spec=spec, settings=settings, artifacts=store, seq=seq)
        run_to_end(upload.run, ctx)

    run_upload("newer", 2, "new")
    run_upload("older", 1, "old")
    assert latest(s3, bucket, project)["rev"] == "newer"
    assert f"projects/{project}/older/posts.json" in keys_under(s3, bucket, f"projects/{project}/older/")
    run_upload("newest", 3, "newest")
    assert latest(s3, bucket, project)["rev"] == "newest"


def test_wrong_s3_keys_fail_the_job_with_a_clear_error(settings: Settings, workers: Workers, store: JobStore,
                                                      s3_server: Any,
                                                      api_factory: Callable[[Settings], ApiServer]) -> None:
    settings = s3_settings(settings, s3_server).with_(s3_secret_access_key="wrong-secret")
    workers.start(settings)
    api = api_factory(settings)
    api.client.post("/jobs", json={"task": "deploy-repo", "source": str(DEMO_REPO), "job_id": "bad-keys",
                                   "project_id": "p-bad", "options": {"skipEmbeddings": True}})
    job = wait_job(store, "bad-keys", timeout=240)
    assert job.status == JobStatus.FAILED
    # refused at the first look into the bucket, before anything is built
    assert job.error and job.error["stage"] == "existing"
    assert "credentials" in job.error["message"] and "wrong-secret" not in json.dumps(job.error)


def test_kill9_during_upload_resumes_without_reuploading(settings: Settings, workers: Workers, store: JobStore,
                                                        s3_server: Any,
                                                        api_factory: Callable[[Settings], ApiServer]) -> None:
    step = 5
    settings, s3, bucket, project = on_s3(settings.with_(upload_batch=step, s3_max_concurrency=2), s3_server)
    api = api_factory(settings)
    victim = workers.start(settings)
    api.client.post("/jobs", json={"task": "deploy-repo", "source": str(CORPORA / "opensource-guide"),
                                   "job_id": "up-1", "project_id": project, "options": {"skipEmbeddings": True}})

    def mid_upload(job: JobView) -> bool:
        stage = store.stage("up-1", "upload")
        return stage.status == StageStatus.RUNNING and (stage.cursor or {}).get("next", 0) >= 20 * step

    wait_job(store, "up-1", timeout=300, until=mid_upload)
    victim.kill9()
    at_kill = store.stage("up-1", "upload").cursor or {}
    killed_at = time.time()
    workers.start(settings)
    job = wait_job(store, "up-1", timeout=300)
    assert job.status == JobStatus.COMPLETED, job.error
    stage = job.stage("upload")
    assert stage.attempts == 2
    assert stage.resumed_from is not None and stage.resumed_from["next"] >= at_kill["next"]
    info = job.result["publishInfo"] if job.result else {}
    # finished steps were not sent again; of the step in flight at the kill, what had landed is skipped
    assert info["successfulUploads"] + info["skippedUploads"] == info["totalFiles"]
    assert info["skippedUploads"] <= step
    stored = keys_under(s3, bucket, f"projects/{project}/up-1/")
    assert f"projects/{project}/up-1/manifest.json" in stored
    assert latest(s3, bucket, project)["rev"] == "up-1"
    print(f"\nupload resumed {time.time() - killed_at:.1f}s after kill -9 at cursor {at_kill}; {info}")


def test_tasks_on_a_dist_folder_enrich_publish_r2_and_build_files(
        settings: Settings, workers: Workers, store: JobStore, tmp_path: Path, s3_server: Any,
        api_factory: Callable[[Settings], ApiServer], callback_server: Callable[..., CallbackServer]) -> None:
    settings, s3, bucket, project = on_s3(settings, s3_server)
    api, cb = start_services(settings, workers, api_factory, callback_server)

    def process(job_id: str, task: str, data: dict[str, Any]) -> JobView:
        body = {"jobId": job_id, "task": task, "callbackUrl": cb.url, "data": {"projectId": project, **data}}
        assert api.client.post("/process", json=body).status_code == 202
        job = wait_job(store, job_id, timeout=240)
        assert job.status == JobStatus.COMPLETED, job.error
        return job

    built = process("built", "process-all", {"repoInfo": {"path": str(DEMO_REPO)}})
    dist = tmp_path / "dist"
    shutil.copytree(Path(built.result["distFolder"] if built.result else ""), dist)

    # enrich-data: the similarity files of a dist folder, from its embedding map, written in place
    similarity = json.loads((dist / "posts-similarity.json").read_text())
    (dist / "posts-similarity.json").unlink()
    (dist / "posts-similar-hash.json").unlink()
    process("enriched", "enrich-data", {"assets": {"distFolder": str(dist)}})
    assert json.loads((dist / "posts-similarity.json").read_text()) == similarity
    assert (dist / "posts-similar-hash.json").is_file()

    # publish-build-files: the folder as it is, under the revision
    process("files", "publish-build-files", {"repoInfo": {"distPath": str(dist)}})
    as_is = keys_under(s3, bucket, f"projects/{project}/files/")
    local = {p.relative_to(dist).as_posix() for p in dist.rglob("*") if p.is_file()}
    assert {k.removeprefix(f"projects/{project}/files/") for k in as_is} == local

    # publish-r2: the shared layout, and the project's latest revision
    job = process("r2", "publish-r2", {"assets": {"distFolder": str(dist)}, "orgId": "o-9"})
    info = job.result["publishInfo"] if job.result else {}
    assert info["projectId"] == project and info["orgId"] == "o-9" and info["failedUploads"] == 0
    shared = keys_under(s3, bucket, f"projects/{project}/_shared/")
    assert any(k.endswith("-lg.webp") for k in shared) and any("/_shared/posts/" in k for k in shared)
    assert latest(s3, bucket, project)["rev"] == "r2"

    # a dist folder that is not there: a clear failure naming the field (and no path of the worker's)
    missing = {"jobId": "nodist", "task": "publish-r2", "callbackUrl": cb.url,
               "data": {"projectId": project, "assets": {"distFolder": str(tmp_path / "nope")}}}
    api.client.post("/process", json=missing)
    failed = wait_job(store, "nodist", timeout=60)
    assert failed.status == JobStatus.FAILED and (failed.error or {}).get("message") == "distFolder: does not exist"


def test_workers_sharing_only_redis_and_the_bucket(settings: Settings, workers: Workers, store: JobStore,
                                                   tmp_path: Path, s3_server: Any,
                                                   api_factory: Callable[[Settings], ApiServer]) -> None:
    """Two workers with no common folder: every artifact between stages goes through the bucket.
    The bundle is published under a folder of the bucket (REPOBUILD_PUBLISH_TARGET=s3://bucket/sites)."""
    base, s3, bucket, project = on_s3(settings.with_(s3_prefix="sites"), s3_server)
    prefix = f"artifacts-{uuid.uuid4().hex[:8]}"
    for n in range(2):  # as on two machines: own temp and cache folders, own output folder
        workers.start(base.with_(artifacts=f"s3://{bucket}/{prefix}", temp_dir=str(tmp_path / f"m{n}"),
                                 artifacts_cache=str(tmp_path / f"m{n}" / "cache"),
                                 output=str(tmp_path / f"m{n}" / "out")), concurrency=1)
    api = api_factory(base.with_(artifacts=f"s3://{bucket}/{prefix}"))
    job = deploy(api, store, "shared-1", DEMO_REPO, project)
    assert job.stage("embed_text").summary["embedded"] > 0
    stored = keys_under(s3, bucket, f"{prefix}/")
    assert any("/cache/vectors/" in k for k in stored) and any("/jobs/shared-1/publish/" in k for k in stored)
    posts = json.loads(s3.get_object(Bucket=bucket, Key=f"sites/projects/{project}/shared-1/posts.json")["Body"].read())
    assert json.loads(s3.get_object(Bucket=bucket, Key=f"sites/projects/{project}/latest.json")["Body"].read())[
        "rev"] == "shared-1"
    assert job.result and job.result["publishInfo"]["r2ContentPath"] == f"sites/projects/{project}/shared-1/"
    assert len(posts) == job.result["counts"]["posts"] if job.result else False
    # both workers took part (fan-out batches, stages) without a shared disk
    logs = [(tmp_path / f"worker-{n}.log").read_text() for n in range(2)]
    assert all("succeeded" in log for log in logs)
