"""The HTTP side of the end-to-end tests: a worker, the API, a callback receiver; jobs in, state and callbacks out."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore, JobView
from tests.conftest import ApiServer, CallbackServer, Workers, wait_job


def start_services(settings: Settings, workers: Workers, api_factory: Callable[[Settings], ApiServer],
                   callback_server: Callable[..., CallbackServer]) -> tuple[ApiServer, CallbackServer]:
    """A worker process (ready), the HTTP API and a callback receiver, all on `settings`."""
    workers.start(settings)
    return api_factory(settings), callback_server()


def submit_process(api: ApiServer, job_id: str, task: str, callback: str, data: dict[str, Any]) -> None:
    """A job through the original's `POST /process`, which answers 202 with the job id."""
    r = api.client.post("/process", json={"jobId": job_id, "task": task, "callbackUrl": callback, "data": data})
    assert r.status_code == 202, r.text
    assert r.json() == {"status": "accepted", "jobId": job_id}


def finished(store: JobStore, job_id: str, status: JobStatus) -> JobView:
    job = wait_job(store, job_id, timeout=120)
    assert job.status == status, job.error
    return job


def job_json(api: ApiServer, job_id: str) -> tuple[dict[str, Any], str]:
    """`GET /jobs/<id>` parsed, and as the raw text a token must not appear in."""
    r = api.client.get(f"/jobs/{job_id}")
    assert r.status_code == 200, r.text
    value: dict[str, Any] = r.json()
    return value, r.text


def callback_of(cb: CallbackServer, job_id: str) -> tuple[dict[str, Any], bytes]:
    """The one accepted callback of a job, parsed and as the bytes sent."""
    bodies = [req["body"] for req in cb.accepted if json.loads(req["body"])["jobId"] == job_id]
    assert len(bodies) == 1, f"{len(bodies)} callbacks for {job_id}"
    payload: dict[str, Any] = json.loads(bodies[0])
    return payload, bodies[0]
