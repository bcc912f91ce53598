"""Tier 2: a new job's first message, held back and written with the job, is the message `apply_async` sends.

Both go to the same private redis-server; what lands in the queue's list is compared field by field (ids, tags and
the clock aside). That a worker runs such a job end to end is what every API test and e2e test does now.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis

from pipeline.models import JobSpec, SourceSpec
from pipeline.plans import stages_for
from pipeline.stores.jobs import JobExists
from pipeline.stores.jobs_redis import RedisJobStore
from tests.conftest import DEMO_REPO
from worker.held_messages import held_chain
from worker.repobuild_app import RepobuildCelery

pytestmark = pytest.mark.integration
STAGES = list(stages_for("process-all"))
QUEUE = "repobuild.io"  # fetch's queue


def queued(client: redis.Redis) -> list[dict[str, Any]]:
    """The messages waiting in fetch's queue, oldest first, bodies decoded."""
    out = []
    for raw in reversed(client.lrange(QUEUE, 0, -1)):
        message = json.loads(raw)
        message["body"] = json.loads(base64.b64decode(message["body"]))
        out.append(message)
    return out


def without_ids(message: dict[str, Any], job_id: str) -> dict[str, Any]:
    text = json.dumps(message).replace(job_id, "JOB")
    plain = json.loads(text)
    for name in ("id", "root_id"):
        plain["headers"][name] = "ID"
    plain["properties"]["correlation_id"] = plain["properties"]["delivery_tag"] = "ID"
    return dict(plain)


def spec(job_id: str, **extra: Any) -> JobSpec:
    return JobSpec(job_id=job_id, task="process-all", source=SourceSpec(path=str(DEMO_REPO)), **extra)


def test_the_held_message_is_the_one_apply_async_sends(celery_app: RepobuildCelery, store: RedisJobStore) -> None:
    client = celery_app.redis_client()
    sigs = [celery_app.tasks[f"repobuild.{name}"].si("sent") for name in STAGES]
    sigs[0].apply_async(chain=sigs[:0:-1])
    assert celery_app.sends_with_jobs
    job, created = store.create(spec("held"), tuple(STAGES), send=held_chain(celery_app, "held", STAGES))
    assert created and job.stage("fetch").status.value == "queued"
    assert store.get("held").stage("fetch").status.value == "queued"
    sent, held = queued(client)
    assert held["body"][0] == ["held"] and held["headers"]["task"] == "repobuild.fetch"
    assert [s["task"] for s in held["body"][2]["chain"]] == [f"repobuild.{n}" for n in reversed(STAGES[1:])]
    assert without_ids(held, "held") == without_ids(sent, "sent")


def test_a_job_that_exists_sends_nothing(celery_app: RepobuildCelery, store: RedisJobStore) -> None:
    client = celery_app.redis_client()
    store.create(spec("twice"), tuple(STAGES), send=held_chain(celery_app, "twice", STAGES))
    again, created = store.create(spec("twice"), tuple(STAGES), send=held_chain(celery_app, "twice", STAGES))
    assert not created and again.spec.job_id == "twice"
    with pytest.raises(JobExists):
        store.create(spec("twice", options={"x": 1}), tuple(STAGES), send=held_chain(celery_app, "twice", STAGES))
    assert len(queued(client)) == 1  # one message: the first create's


def test_only_sending_commands_go_with_a_job(celery_app: RepobuildCelery, store: RedisJobStore) -> None:
    with pytest.raises(ValueError, match="'flushall' cannot be sent"):
        store.create(spec("odd"), tuple(STAGES), send=[("flushall", ())])
    with pytest.raises(KeyError):
        store.get("odd")  # refused before anything was written


def test_a_project_job_gets_its_submission_number(celery_app: RepobuildCelery, store: RedisJobStore) -> None:
    for n in range(1, 3):
        store.create(spec(f"p{n}", project_id="site"), tuple(STAGES), send=held_chain(celery_app, f"p{n}", STAGES))
        assert store.project_seq(f"p{n}") == n
