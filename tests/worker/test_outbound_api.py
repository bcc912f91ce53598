"""Tier 2/3: the outbound address policy and the token scope through the live API and worker.

Refused addresses are never contacted: at enqueue a literal non-public address is a 400 naming the field; at
connect time (a redirect into one) the job fails saying the address was refused, and a canary on 127.0.0.2
proves no connection reached it. Only loopback is used; 127.0.0.1 is on the tests' allowlist, 127.0.0.2 is not.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore
from tests.conftest import DEMO_REPO, ApiServer, CallbackServer, Workers, wait_job
from tests.fakes.gitserver import GitHttpServer, make_git_repo
from tests.fakes.listeners import Canary
from tests.stages.test_outbound import Redirector

pytestmark = pytest.mark.integration

SERVICE_TOKEN = "ghp-service-wide-9c3e"
REFUSED_CALLBACKS = ["http://10.0.0.1/cb", "http://169.254.169.254/latest/meta-data/", "http://[::ffff:a9fe:a9fe]/",
                     "http://[64:ff9b::7f00:1]/cb", "http://[2002:7f00:1::]/cb", "http://2130706434/cb",
                     "http://0x7f.2/cb", "http://127.2/cb", "http://localhost/cb", "https://[::1]/cb",
                     "http://[fd00:ec2::254]/"]


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    files = {p.relative_to(DEMO_REPO).as_posix(): p.read_bytes() for p in DEMO_REPO.rglob("*") if p.is_file()}
    make_git_repo(tmp_path / "origin", files, "import")
    return tmp_path / "origin"


def refused(api: ApiServer, path: str, body: dict[str, Any], field: str) -> str:
    r = api.client.post(path, json=body)
    assert r.status_code == 400, (body, r.text)
    answer = r.json()
    assert answer["status"] == "error" and answer["field"] == field, answer
    assert "address refused" in answer["message"] and answer["message"].startswith(f"{field}: "), answer
    return str(answer["message"])


def test_urls_naming_refused_addresses_are_400_at_enqueue(settings: Settings, store: JobStore,
                                                          api_factory: Callable[[Settings], ApiServer],
                                                          callback_server: Callable[..., CallbackServer]) -> None:
    api = api_factory(settings)  # no worker: nothing may even be stored
    for n, url in enumerate(REFUSED_CALLBACKS):
        refused(api, "/jobs", {"task": "process-all", "source": str(DEMO_REPO), "callback_url": url,
                               "job_id": f"cb{n}"}, "callback_url")
        refused(api, "/process", {"jobId": f"pcb{n}", "task": "process-all", "callbackUrl": url,
                                  "data": {"repoUrl": "https://github.com/o/r"}}, "callbackUrl")
    message = refused(api, "/jobs", {"task": "process-all", "source": "http://2130706434/r.git"}, "source")
    assert "127.0.0.2" in message
    refused(api, "/jobs", {"task": "process-all", "source": "http://x:tok@[64:ff9b::a9fe:a9fe]/r.git"}, "source")
    refused(api, "/jobs", {"task": "wp-import", "options": {"wpXml": "PHJzcy8+", "repoUrl": "http://192.168.1.1/r"}},
            "options.repoUrl")
    refused(api, "/process", {"jobId": "p1", "task": "wp-import", "callbackUrl": "https://hooks.example/cb",
                              "data": {"remoteUrl": "http://10.1.2.3/r.git"}}, "data.remoteUrl")
    refused(api, "/process", {"jobId": "p2", "task": "process-all", "callbackUrl": "https://hooks.example/cb",
                              "data": {"repoInfo": {"path": "http://169.254.169.254/r.git"}}}, "data.repoInfo.path")
    # ssh and git:// cannot be held to the policy: only listed hosts
    for remote in ("git@github.com:o/r.git", "ssh://git@github.com/o/r.git", "git://github.com/o/r.git"):
        assert "allowlist" in refused(api, "/jobs", {"task": "process-all", "source": remote}, "source")
    for job_id in ("cb0", "pcb0", "p1", "p2"):
        assert api.client.get(f"/jobs/{job_id}").status_code == 404
    # the allowlisted receiver and a public name (resolved only when the callback is sent) are accepted
    cb = callback_server()
    ok = api.client.post("/jobs", json={"task": "process-all", "source": str(DEMO_REPO), "callback_url": cb.url})
    assert ok.status_code == 202, ok.text
    ok = api.client.post("/process", json={"jobId": "p3", "task": "process-all", "callbackUrl": "https://hooks.example/x",
                                           "data": {"repoUrl": "https://github.com/o/r"}})
    assert ok.status_code == 202, ok.text


def test_a_redirect_into_a_refused_address_fails_the_job_and_reaches_nothing(
        settings: Settings, workers: Workers, store: JobStore, canary: Canary,
        api_factory: Callable[[Settings], ApiServer], callback_server: Callable[..., CallbackServer]) -> None:
    hop = Redirector(canary.url())
    try:
        workers.start(settings)
        api = api_factory(settings)
        cb = callback_server()
        r = api.client.post("/jobs", json={"task": "process-all", "source": f"{hop.url}/site.git", "job_id": "r1",
                                           "callback_url": cb.url})
        assert r.status_code == 202, r.text
        job = wait_job(store, "r1")
        assert job.status == JobStatus.FAILED
        message = (job.error or {}).get("message", "")
        assert "address refused" in message and "127.0.0.2" in message, job.error
        assert job.stages[0].attempts == 1  # refused is permanent: not retried
        assert canary.connections == 0
        payload = json.loads(cb.accepted[0]["body"])
        assert payload["status"] == "failed" and "address refused" in payload["error"]
    finally:
        hop.stop()


def test_the_service_token_never_goes_to_a_host_that_is_not_github(
        settings: Settings, workers: Workers, store: JobStore, origin: Path,
        api_factory: Callable[[Settings], ApiServer]) -> None:
    server = GitHttpServer({"site": origin})  # takes anyone: it would see a token if one were sent
    try:
        settings = settings.with_(github_token=SERVICE_TOKEN)  # GitHub: api.github.com and github.com
        workers.start(settings)
        api = api_factory(settings)
        r = api.client.post("/jobs", json={"task": "process-all", "source": server.url_for("site"), "job_id": "t1"})
        assert r.status_code == 202, r.text
        job = wait_job(store, "t1")
        assert job.status == JobStatus.COMPLETED, job.error
        assert server.authorizations and set(server.authorizations) == {""}
    finally:
        server.stop()
