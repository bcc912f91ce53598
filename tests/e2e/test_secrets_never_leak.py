"""Tier 3: every kind of secret a job touches, and every place a reader could find one.

One deploy job through the original's `POST /process` and one failing job through `POST /jobs` carry
every credential a caller sends — git tokens in the URL (http) and in the token field, passwords in
`ssh://`, `git://` and `repoInfo.path` URLs, credential query parameters, a callback URL with a
password — while the service uses its own: the API key, the callback signing secret, S3 keys
(SeaweedFS), the OpenAI key (a local OpenAI-compatible server embeds the text) and GITHUB_TOKEN.

Then each secret is searched for in the job views, the job list, the events, the job pages, every key
and value of Redis (sampled while the jobs run, so queued Celery messages are read too), every artifact
file, the bundle in the bucket, the callback bodies, the worker, API and Flower logs, and Flower's task records.
A caller's secret may be in one place only, the job's own secrets hash; the service's never in Redis.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api.cli.local_services import free_port
from pipeline.models import JobStatus
from pipeline.plans import job_is_over
from pipeline.settings import Settings
from pipeline.stores.jobs_redis import RedisJobStore
from tests.conftest import DEMO_REPO, CallbackServer, Workers
from tests.e2e.places_secrets_hide import bucket_objects, files_under, hits, redis_contents, serving
from tests.e2e.s3_bucket import on_s3
from tests.fakes.gitserver import GitHttpServer, make_git_repo
from tests.fakes.openai_server import OpenAIServer

pytestmark = pytest.mark.e2e

# What callers send. Each is distinct, so a hit names the one that leaked.
GIT_FIELD_TOKEN = "fieldtok-5b1e93c2d7"  # data.gitToken: the one the git server takes
GIT_URL_TOKEN = "urltok-0c4a77d1e9"  # in the clone URL's userinfo (the token field, given too, wins)
REPO_INFO_TOKEN = "repoinfotok-8e2f61b3"  # in data.repoInfo.path
SSH_PASSWORD = "sshpass-3d9a0c7e51"  # ssh://user:pass@ push URL
GIT_PASSWORD = "gitpass-6f14b2a8c0"  # git://user:pass@ URL
QUERY_TOKEN = "querytok-1a7c5e9b24"  # ?access_token= of a URL field
FIELD_SECRET = "fieldsecret-9b3d7f1a"  # a credential-named field of data
CALLBACK_PASSWORD = "cbpass-4e8a2c6f90"  # userinfo of the callback URL
CALLBACK_QUERY_TOKEN = "cbquery-7d3b9f5e12"  # ?token= of the callback URL
JOBS_TOKEN = "jobstok-2c6e0a4d88"  # the /jobs `token` field
JOBS_SOURCE_PASSWORD = "jobssrc-5f9b3d7e01"  # git:// source of the /jobs job
JOBS_CALLBACK_PASSWORD = "jobscb-8a0c4e2f66"
# The service's own.
API_KEY = "apikey-6b0d4f8a2c"
CALLBACK_SECRET = "cbsecret-1e5a9c3f77"
OPENAI_KEY = "sk-openai-3f7b1d5e99"
GITHUB_TOKEN = "ghp-service-0a4c8e2b66"

CALLER_SECRETS = [GIT_FIELD_TOKEN, GIT_URL_TOKEN, REPO_INFO_TOKEN, SSH_PASSWORD, GIT_PASSWORD, QUERY_TOKEN,
                  FIELD_SECRET, CALLBACK_PASSWORD, CALLBACK_QUERY_TOKEN, JOBS_TOKEN, JOBS_SOURCE_PASSWORD,
                  JOBS_CALLBACK_PASSWORD]


def demo_files() -> dict[str, bytes]:
    return {p.relative_to(DEMO_REPO).as_posix(): p.read_bytes() for p in DEMO_REPO.rglob("*") if p.is_file()}


def watch(store: RedisJobStore, client: redis.Redis, job_ids: list[str], timeout: float = 240) -> dict[str, bytes]:
    """Wait for the jobs to be over, reading all of Redis meanwhile: {where: every value seen there}."""
    seen: dict[str, set[bytes]] = {}
    deadline = time.monotonic() + timeout
    while True:
        for where, data in redis_contents(client).items():
            seen.setdefault(where, set()).add(data)
        if all(job_is_over(store.get(j)) for j in job_ids):
            break
        assert time.monotonic() < deadline, [store.get(j) for j in job_ids]
        time.sleep(0.2)
    return {where: b"\n".join(sorted(values)) for where, values in seen.items()}


def test_no_secret_leaves_the_job_secrets(settings: Settings, workers: Workers, store: RedisJobStore, tmp_path: Path,
                                          s3_server: Any, callback_server: Callable[..., CallbackServer]) -> None:
    settings, s3, bucket, project = on_s3(settings, s3_server)
    content = tmp_path / "content"
    make_git_repo(content, demo_files())
    git = GitHttpServer({"content.git": content}, token=GIT_FIELD_TOKEN)
    llm = OpenAIServer(api_key=OPENAI_KEY)
    cb = callback_server()
    try:
        settings = settings.with_(api_keys=(API_KEY,), callback_secret=CALLBACK_SECRET, github_token=GITHUB_TOKEN,
                                  embed_provider="openai", openai_base_url=llm.base_url, openai_api_key=OPENAI_KEY,
                                  openai_dimensions=32)
        service_secrets = [API_KEY, CALLBACK_SECRET, OPENAI_KEY, GITHUB_TOKEN, s3_server.access_key,
                           s3_server.secret_key]
        env = settings.to_env()
        api_port, flower_port = free_port(), free_port()
        api_url, flower_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{flower_port}"
        flower_auth = ("ops", "flower-pass-e2e")
        with serving([sys.executable, "-m", "api.cli.main", "flower", f"--port={flower_port}",
                      "--address=127.0.0.1"], {**env, "FLOWER_BASIC_AUTH": ":".join(flower_auth)},
                     tmp_path / "flower.log", f"{flower_url}/healthcheck"), \
             serving([sys.executable, "-m", "api.cli.main", "api", "--host=127.0.0.1", f"--port={api_port}"], env,
                     tmp_path / "api.log", f"{api_url}/health"):
            workers.start(settings)
            api = httpx.Client(base_url=api_url, headers={"X-API-Key": API_KEY}, timeout=30)
            assert httpx.get(f"{api_url}/jobs", timeout=10).status_code == 401  # the key is really required
            host = f"127.0.0.1:{cb.httpd.server_port}"
            process_callback = f"http://hook:{CALLBACK_PASSWORD}@{host}/callback?token={CALLBACK_QUERY_TOKEN}"
            repo_url = git.url_for("content.git").replace("http://", f"http://x-access-token:{GIT_URL_TOKEN}@")
            r = api.post("/process", json={"jobId": "leak-process", "task": "deploy-repo",
                                           "callbackUrl": process_callback, "data": {
                "repoUrl": repo_url, "gitToken": GIT_FIELD_TOKEN, "branch": "main",
                "projectId": project, "orgId": "org-1",
                "repoInfo": {"path": f"https://oauth2:{REPO_INFO_TOKEN}@127.0.0.1:1/other.git"},
                "remoteUrl": f"ssh://deploy:{SSH_PASSWORD}@127.0.0.1:1/site.git",
                "mirrorUrl": f"git://mirror:{GIT_PASSWORD}@127.0.0.1:1/site.git",
                "siteUrl": f"https://127.0.0.1:1/feed?page=2&access_token={QUERY_TOKEN}",
                "webhookSecret": FIELD_SECRET}})
            assert r.status_code == 202, r.text
            r = api.post("/jobs", json={
                "task": "process-all", "job_id": "leak-jobs", "token": JOBS_TOKEN,
                "source": f"git://reader:{JOBS_SOURCE_PASSWORD}@127.0.0.1:{free_port()}/closed.git",
                "callback_url": f"http://hook:{JOBS_CALLBACK_PASSWORD}@{host}/callback",
                "options": {"remoteUrl": f"ssh://deploy:{SSH_PASSWORD}@127.0.0.1:1/site.git"}})
            assert r.status_code == 202, r.text
            places = watch(store, redis.Redis.from_url(settings.redis_url or ""), ["leak-process", "leak-jobs"])

            deployed, failed = store.get("leak-process"), store.get("leak-jobs")
            assert deployed.status == JobStatus.COMPLETED, deployed.error
            assert failed.status == JobStatus.FAILED and "127.0.0.1" in str(failed.error), failed.error
            # a completed job's secrets go once its callback is delivered; a failed one keeps them for a retry
            assert store.secrets("leak-process") == {} and store.secrets("leak-jobs")
            for job_id in ("leak-process", "leak-jobs"):
                places[f"GET /jobs/{job_id}"] = api.get(f"/jobs/{job_id}").content
                places[f"GET /jobs/{job_id}/events"] = api.get(f"/jobs/{job_id}/events").content
            places["GET /jobs"] = api.get("/jobs").content
            for page in ("/ui/jobs", "/ui/jobs/leak-process", "/ui/jobs/leak-jobs"):  # the job pages
                shown = api.get(page)
                assert shown.status_code == 200, shown.text
                places[f"GET {page}"] = shown.content
            flower_tasks = httpx.get(f"{flower_url}/api/tasks", auth=flower_auth, timeout=10).json()
            places["flower /api/tasks"] = json.dumps(flower_tasks).encode()
            places.update({f"flower task {tid}": json.dumps(httpx.get(f"{flower_url}/api/task/info/{tid}",
                                                                      auth=flower_auth, timeout=10).json()).encode()
                           for tid in flower_tasks})
        workers.stop_all()  # its log is complete once it has shut down
    finally:
        git.stop()
        llm.close()

    # the secrets were used where they belong
    assert llm.requests_to("/v1/embeddings"), "the OpenAI-compatible server was never asked"
    by_job = {json.loads(req["body"])["jobId"]: req for req in cb.accepted}
    assert set(by_job) == {"leak-process", "leak-jobs"}
    delivered = by_job["leak-process"]
    assert delivered["path"] == f"/callback?token={CALLBACK_QUERY_TOKEN}"
    assert delivered["headers"]["Authorization"] == "Basic " + base64.b64encode(
        f"hook:{CALLBACK_PASSWORD}".encode()).decode()
    assert delivered["headers"]["X-Repobuild-Signature"] == "sha256=" + hmac.new(
        CALLBACK_SECRET.encode(), delivered["body"], hashlib.sha256).hexdigest()
    assert by_job["leak-jobs"]["headers"]["Authorization"] == "Basic " + base64.b64encode(
        f"hook:{JOBS_CALLBACK_PASSWORD}".encode()).decode()
    # tasks carry ids only: the job's, and for a batch its stage and number
    task_args = [ast.literal_eval(t["args"]) for t in flower_tasks.values()]
    assert task_args and all(args[0] in by_job and all(isinstance(a, str | int) for a in args[1:])
                             for args in task_args), task_args

    # ... and nowhere else
    places.update(files_under(Path(settings.artifacts), "artifact"))
    places.update(files_under(Path(settings.output), "output"))
    places.update(bucket_objects(s3, bucket, f"projects/{project}/"))
    places.update({f"callback body {n}": req["body"] for n, req in enumerate(cb.requests)})
    places.update({f"log {p.name}": p.read_bytes() for p in tmp_path.glob("*.log")})
    assert any(where.startswith("s3 ") for where in places) and "log api.log" in places
    assert any(where.startswith("log worker-") for where in places)
    allowed = {f"redis {store.keys.secrets(job_id)}" for job_id in ("leak-process", "leak-jobs")}
    leaks = {secret: found for secret in CALLER_SECRETS if (found := [w for w in hits(places, secret)
                                                                       if w not in allowed])}
    leaks.update({secret: found for secret in service_secrets if (found := hits(places, secret))})
    assert not leaks, json.dumps(leaks, indent=1)
