"""Redis down when a job is submitted: `POST /jobs` and `POST /process` answer 503 with a JSON error, leave
nothing of the job behind, and the same job id submitted again once Redis is back runs.

Then Redis is killed at a seeded moment of a burst of submissions: every job answered 202 completes (the AOF
keeps it), and every job answered 503 has either left nothing, or (when the store took the job and the broker
did not take its message) is driven by the reconciler all the same, and submitting it again answers 200.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import redis

from api.cli.local_services import PrivateRedis
from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.stores.jobs_redis import RedisJobStore
from tests.chaos.conftest import Chaos
from tests.chaos.redis_faults import aof_redis_server  # noqa: F401 - this module's Redis keeps an AOF
from tests.conftest import DEMO_REPO, ApiServer, CallbackServer, Workers, wait_job
from worker.inflight import jobs_in_broker

PARSE_ONLY = {"skipEmbeddings": True}


def jobs_body(job_id: str) -> dict[str, Any]:
    return {"task": "process-all", "source": str(DEMO_REPO), "job_id": job_id, "options": PARSE_ONLY}


def process_body(job_id: str, callback: str) -> dict[str, Any]:
    return {"jobId": job_id, "task": "process-all", "callbackUrl": callback,
            "data": {"repoInfo": {"path": str(DEMO_REPO)}, "skipEmbeddings": True}}


def request_for(job_id: str, callback: str) -> tuple[str, dict[str, Any]]:
    """Burst job n goes through `POST /jobs` if n is even, through the original's `POST /process` if odd."""
    if int(job_id.rsplit("-", 1)[1]) % 2 == 0:
        return "/jobs", jobs_body(job_id)
    return "/process", process_body(job_id, callback)


def traces(client: redis.Redis, job_id: str) -> list[str]:
    """Everything Redis holds that names the job: keys, index entries, broker messages."""
    found = [k.decode() for k in client.scan_iter(match=f"*{job_id}*", count=1000)]
    for key in client.scan_iter(match="*", count=1000):
        if client.type(key) == b"zset" and client.zscore(key, job_id) is not None:
            found.append(f"{key.decode()}[{job_id}]")
    if job_id in jobs_in_broker(client):
        found.append(f"a broker message for {job_id}")
    return found


def post(api: ApiServer, route: str, body: dict[str, Any]) -> httpx.Response:
    return api.client.post(route, json=body)


def test_submit_while_redis_is_down_answers_503_and_leaves_nothing(
        chaos: Chaos, settings: Settings, redis_server: PrivateRedis, workers: Workers, store: RedisJobStore,
        api_factory: Callable[[Settings], ApiServer], callback_server: Callable[..., CallbackServer]) -> None:
    rec = chaos.record("redis down at submit")
    workers.start(settings)
    api = api_factory(settings)
    cb = callback_server().url
    redis_server.halt(hard=True)
    answered: list[float] = []
    for route, body in (("/jobs", jobs_body("down-jobs")), ("/process", process_body("down-process", cb))):
        t0 = time.monotonic()
        r = post(api, route, body)
        answered.append(time.monotonic() - t0)
        assert r.status_code == 503, (route, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["status"] == "error" and "unavailable" in r.json()["message"]
        rec.injected += 1
    redis_server.start()
    client = redis.Redis.from_url(settings.redis_url or "")
    for job_id in ("down-jobs", "down-process"):
        assert traces(client, job_id) == [], job_id
    for route, body in (("/jobs", jobs_body("down-jobs")), ("/process", process_body("down-process", cb))):
        assert post(api, route, body).status_code == 202, route
        rec.jobs_submitted += 1
    for job_id in ("down-jobs", "down-process"):
        assert wait_job(store, job_id, timeout=120).status == JobStatus.COMPLETED, job_id
        rec.jobs_completed += 1
    rec.notes.append(f"503 answered in {', '.join(f'{s:.2f}s' for s in answered)} with Redis down")


def test_redis_killed_during_a_burst_of_submissions(
        chaos: Chaos, settings: Settings, redis_server: PrivateRedis, workers: Workers, store: RedisJobStore,
        api_factory: Callable[[Settings], ApiServer], callback_server: Callable[..., CallbackServer]) -> None:
    rec = chaos.record("redis killed during submissions")
    workers.start(settings)
    api = api_factory(settings)
    cb = callback_server().url
    answers: dict[str, int] = {}
    stop = threading.Event()

    def submit_many() -> None:
        n = 0
        while not stop.is_set():
            job_id = f"burst-{n:04d}"
            route, body = request_for(job_id, cb)
            answers[job_id] = post(api, route, body).status_code
            n += 1
            # a steady stream, not a flood: each accepted job is run to the end below (fewer of them at CI scale)
            time.sleep(0.03 if chaos.full else 0.1)

    sender = threading.Thread(target=submit_many, daemon=True)
    sender.start()
    for _ in range(chaos.n(1, 3)):
        time.sleep(chaos.rng.uniform(0.3, 1.0))
        redis_server.halt(hard=True)
        rec.injected += 1
        time.sleep(chaos.rng.uniform(0.3, 1.0))
        redis_server.start()
    time.sleep(0.5)
    stop.set()
    sender.join(30)
    assert not sender.is_alive()

    assert set(answers.values()) <= {202, 503}, answers
    refused = [j for j, code in answers.items() if code == 503]
    assert refused, "no submission met the outage; nothing was tested"
    client = redis.Redis.from_url(settings.redis_url or "")
    half_written = [j for j in refused if traces(client, j)]
    # A job the store took is accepted even when its message could not be sent (the reconciler sends it), so
    # a 503 leaves something only when Redis applied the write and the connection died before its answer.
    assert len(half_written) <= 1, half_written
    for job_id in half_written:
        # taken by the store, its message not by the broker: the same request again is the same job
        again = post(api, *request_for(job_id, cb))
        assert again.status_code == 200, (job_id, again.text)
    # every refused job left nothing (checked above); a seeded few of them are submitted again and run
    again_ids = chaos.rng.sample([j for j in refused if j not in half_written], min(5, len(refused)))
    for job_id in again_ids:
        again = post(api, *request_for(job_id, cb))
        assert again.status_code == 202, (job_id, again.text)
    ran = [j for j, code in answers.items() if code == 202] + half_written + again_ids
    rec.jobs_submitted += len(ran)
    for job_id in ran:
        job = wait_job(store, job_id, timeout=180)
        assert job.status == JobStatus.COMPLETED, (job_id, job.error)
        rec.jobs_completed += 1
    rec.notes.append(f"{len(answers)} submissions, {len(refused)} answered 503, of which {len(half_written)} "
                     f"left a job the store had taken (completed all the same); {len(again_ids)} refused ones "
                     "submitted again and completed")
