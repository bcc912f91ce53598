"""Tier 2: requests of the wrong shape against the live API (a private Redis, no worker needed).

Each is refused at the edge with a 400 JSON error naming the field, and nothing is stored; no request
answers an HTML page, and an internal failure answers a JSON 500 that tells nothing of the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pipeline.settings import Settings
from pipeline.stores.jobs_redis import RedisJobStore
from tests.conftest import DEMO_REPO, ApiServer

pytestmark = pytest.mark.integration

CALLBACK = "http://127.0.0.1:9/callback"  # never called: no worker runs in these tests
GIT_URL = "https://git.example.org/site.git"


def refused(resp: httpx.Response, field: str | None, status: int = 400) -> str:
    """The JSON error of a refused request: the field it names, in `field` and in the message."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"] == "application/json", resp.text
    body = resp.json()
    assert body["status"] == "error", body
    if field is not None:
        assert body.get("field") == field and field in body["message"], body
    message: str = body["message"]
    return message


def process(api: ApiServer, job_id: str, data: Any, task: str = "process-with-repo") -> httpx.Response:
    return api.client.post("/process", json={"jobId": job_id, "task": task, "callbackUrl": CALLBACK, "data": data})


@pytest.fixture
def api(settings: Settings, api_factory: Callable[[Settings], ApiServer]) -> ApiServer:
    return api_factory(settings)


WRONG_TYPES = [
    ("depth", "abc"), ("depth", [1]), ("depth", -1), ("branch", 5), ("branch", {"name": "main"}),
    ("commit", {"sha": "abc"}), ("commit", 1234567), ("repoUrl", 5), ("repoUrl", ["https://x"]),
    ("repositoryFolder", 5), ("repositoryFolder", ["docs"]), ("projectId", 5), ("projectId", {"id": "p"}),
    ("orgId", [1]), ("orgId", 7), ("skipEmbeddings", "perhaps"),
]


@pytest.mark.parametrize(("name", "value"), WRONG_TYPES)
def test_process_data_of_the_wrong_type(api: ApiServer, store: RedisJobStore, name: str, value: Any) -> None:
    data = {"repoUrl": GIT_URL, "projectId": "p1", name: value}
    refused(process(api, "wrong-type", data), f"data.{name}")
    assert not store.exists("wrong-type")


@pytest.mark.parametrize("repo_info", [{"path": 5}, {"path": ["a"]}, "x", 5, {"distPath": 1}])
def test_process_repo_info_of_the_wrong_type(api: ApiServer, store: RedisJobStore, repo_info: Any) -> None:
    message = refused(process(api, "bad-repo-info", {"repoInfo": repo_info}, task="process-all"), None)
    assert "data.repoInfo" in message
    assert not store.exists("bad-repo-info")


@pytest.mark.parametrize(("task", "name", "value"), [
    ("publish-r2", "assets", "dist"), ("publish-r2", "distFolder", 1), ("wp-import", "wpXml", {"artifact": "x"}),
    ("wp-import", "private", "sometimes"), ("generate-project-from-brief", "brief", ["a"]),
    ("new-repo-from-template", "templateRepoUrl", 3), ("deploy-repo", "previousRev", "../other"),
])
def test_task_specific_data_of_the_wrong_type(api: ApiServer, store: RedisJobStore, task: str, name: str,
                                              value: Any) -> None:
    refused(process(api, "bad-task-data", {"projectId": "p1", name: value}, task=task), f"data.{name}")
    assert not store.exists("bad-task-data")


def test_jobs_options_of_the_wrong_type(api: ApiServer, store: RedisJobStore) -> None:
    body = {"task": "process-all", "source": str(DEMO_REPO), "job_id": "bad-options"}
    refused(api.client.post("/jobs", json={**body, "options": {"repositoryFolder": 5}}), "options.repositoryFolder")
    refused(api.client.post("/jobs", json={**body, "options": {"skipEmbeddings": [True]}}), "options.skipEmbeddings")
    refused(api.client.post("/jobs", json={**body, "options": "all"}), "options")
    refused(api.client.post("/jobs", json={**body, "source": 5}), "source")
    assert not store.exists("bad-options")


@pytest.mark.parametrize(("query", "field"), [
    ({"limit": "abc"}, "limit"), ({"limit": "1.5"}, "limit"), ({"limit": "-3"}, "limit"),
    ({"status": "sleeping"}, "status"),
])
def test_list_query_of_the_wrong_type(api: ApiServer, query: dict[str, str], field: str) -> None:
    refused(api.client.get("/jobs", params=query), field)


def test_malformed_last_event_id(api: ApiServer) -> None:
    created = api.client.post("/jobs", json={"task": "process-all", "source": str(DEMO_REPO), "job_id": "ev-1"})
    assert created.status_code == 202, created.text
    for bad in ("garbage", "1-2-3", "-1", "99999999999999999999999-0"):
        refused(api.client.get("/jobs/ev-1/events", headers={"Last-Event-ID": bad}), "Last-Event-ID")
        refused(api.client.get("/jobs/ev-1/events", params={"after": bad}), "after")


@pytest.mark.parametrize("body", [["rev-1"], "rev-1", 5, {"rev": 5}, {"rev": ["rev-1"]}, {"revision": {"id": 1}}])
def test_rollback_body_of_the_wrong_shape(api: ApiServer, body: Any) -> None:
    message = refused(api.client.post("/projects/p1/rollback", json=body), None)
    assert "rev" in message or "JSON object" in message, message


NOT_NAMES = ["latest", "latest.json", "LATEST", "../up", ".hidden", "a/b", "with space", "x" * 129, "-x"]


@pytest.mark.parametrize("name", NOT_NAMES)
def test_ids_that_cannot_name_a_revision_or_a_project(api: ApiServer, store: RedisJobStore, name: str) -> None:
    """Job ids become revision folders and bucket prefixes, project ids bucket prefixes: one rule for both."""
    jobs = {"task": "process-all", "source": str(DEMO_REPO)}
    refused(api.client.post("/jobs", json={**jobs, "job_id": name}), "job_id")
    refused(api.client.post("/process", json={"jobId": name, "task": "process-all", "callbackUrl": CALLBACK,
                                               "data": {"repoInfo": {"path": str(DEMO_REPO)}}}), "jobId")
    refused(api.client.post("/jobs", json={**jobs, "task": "deploy-repo", "job_id": "n-1", "project_id": name}),
            "project_id")
    refused(process(api, "n-2", {"repoUrl": GIT_URL, "projectId": name}, task="deploy-repo"), "data.projectId")
    refused(api.client.post("/projects/p1/rollback", json={"rev": name}), "rev")
    assert store.r.keys("*job:*") == []


@pytest.mark.parametrize("name", ["latest", "latest.json", "LATEST", ".hidden", "with space"])
def test_ids_in_the_path_follow_the_same_rule(api: ApiServer, name: str) -> None:
    refused(api.client.get(f"/projects/{name}"), "project_id")
    refused(api.client.post(f"/projects/{name}/rollback", json={"rev": "rev-1"}), "project_id")
    for path in (f"/jobs/{name}", f"/jobs/{name}/events"):
        refused(api.client.get(path), "job_id")
    for action in ("retry", "cancel"):
        refused(api.client.post(f"/jobs/{name}/{action}"), "job_id")


def test_no_html_anywhere(api: ApiServer, store: RedisJobStore) -> None:
    missing = api.client.get("/no/such/route")
    assert "/no/such/route" in refused(missing, None, 404)
    wrong_method = api.client.delete("/jobs")
    refused(wrong_method, None, 405)
    assert set(wrong_method.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    not_json = api.client.post("/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert "JSON object" in refused(not_json, None)
    # a failure inside the service (here Redis answers WRONGTYPE): a JSON 500 that tells nothing of it
    store.r.set(store.keys.index, "not a sorted set")
    broken = api.client.get("/jobs")
    message = refused(broken, None, 500)
    assert "WRONGTYPE" not in broken.text and "Traceback" not in broken.text and "redis" not in message.lower()


def test_currently_valid_bodies_stay_valid(api: ApiServer, store: RedisJobStore) -> None:
    """What the original's clients send: numbers as strings, null data, extra keys; all still accepted."""
    accepted = [
        process(api, "ok-1", {"repoUrl": GIT_URL, "depth": "3", "branch": "main", "commit": "a" * 40,
                              "projectId": "p-1", "orgId": "o-1", "skipEmbeddings": True, "someExtra": {"x": 1}}),
        process(api, "ok-2", None, task="process-all"),
        process(api, "ok-3", {"repoInfo": {"path": str(DEMO_REPO), "somethingElse": 1}, "depth": 0},
                task="process-all"),
        process(api, "ok-4", {}, task="make-coffee"),
        api.client.post("/jobs", json={"task": "process-all", "source": str(DEMO_REPO), "job_id": "ok-5",
                                       "options": {"domain": "example.org", "anyOther": [1, 2]}}),
    ]
    assert [r.status_code for r in accepted] == [202] * 5, [r.text for r in accepted]
    spec = store.get("ok-1").spec
    assert spec.source is not None and spec.source.depth == 3 and spec.options["someExtra"] == {"x": 1}
    assert spec.project_id == "p-1" and spec.org_id == "o-1"
    assert store.get("ok-3").spec.source is not None and store.get("ok-3").spec.source.depth is None  # type: ignore[union-attr]
    assert api.client.get("/jobs", params={"limit": "5000", "status": ""}).status_code == 200


def test_openapi_document(api: ApiServer) -> None:
    resp = api.client.get("/openapi.json")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    doc = resp.json()
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    for path, method in [("/jobs", "post"), ("/jobs", "get"), ("/jobs/{job_id}", "get"), ("/process", "post"),
                         ("/jobs/{job_id}/retry", "post"), ("/jobs/{job_id}/cancel", "post"),
                         ("/jobs/{job_id}/events", "get"), ("/projects/{project_id}", "get"),
                         ("/projects/{project_id}/rollback", "post"), ("/health", "get"), ("/ready", "get"),
                         ("/inference/text-embedding", "post"), ("/v1/inference/clip-by-image", "post")]:
        assert method in paths[path], (path, method)
        assert "400" in paths[path][method]["responses"] or path in ("/health", "/ready"), (path, method)
    schemas = doc["components"]["schemas"]
    # the original's body, one schema per task, each naming the data fields that task reads
    process_tasks = {s["properties"]["task"].get("const") for s in schemas.values()
                     if "properties" in s and "callbackUrl" in s["properties"]}
    assert {"process-all", "wp-import", "publish-r2", "new-repo-from-template"} <= process_tasks
    events = {p["name"]: p for p in paths["/jobs/{job_id}/events"]["get"]["parameters"]}
    assert events["Last-Event-ID"]["in"] == "header" and "pattern" in str(events["Last-Event-ID"]["schema"])
