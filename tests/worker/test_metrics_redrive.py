"""Tier 2: a re-drive by the reconciler is counted, by stage and reason (real Redis as broker and store)."""

from __future__ import annotations

import pytest
import redis
from prometheus_client import REGISTRY

from pipeline.models import JobSpec, JobStatus, SourceSpec, StageStatus
from pipeline.plans import stages_for
from pipeline.stores.jobs_redis import RedisJobStore
from tests.conftest import DEMO_REPO
from worker.reconciler import reconcile_once
from worker.repobuild_app import RepobuildCelery

pytestmark = pytest.mark.integration


def redrives(stage: str, reason: str) -> float:
    return REGISTRY.get_sample_value("repobuild_reconciler_redrives_total", {"stage": stage, "reason": reason}) or 0.0


def test_a_stage_whose_worker_died_is_re_driven_and_counted(celery_app: RepobuildCelery, store: RedisJobStore) -> None:
    spec = JobSpec(job_id="rd-1", task="process-all", source=SourceSpec(path=str(DEMO_REPO)))
    store.create(spec, stages_for("process-all"))
    store.set_job("rd-1", JobStatus.RUNNING)
    state = store.stage("rd-1", "fetch")
    state.status = StageStatus.RUNNING  # and nobody holds its lease: its worker is gone
    store.put_stage("rd-1", state)
    before = redrives("fetch", "lease-expired")
    broker = redis.Redis.from_url(celery_app.repobuild_settings.redis_url or "")
    try:
        assert reconcile_once(celery_app, broker) == [("rd-1", "fetch")]
        assert redrives("fetch", "lease-expired") == before + 1
        assert reconcile_once(celery_app, broker) == []  # its message is in the broker now: nothing more to do
        assert redrives("fetch", "lease-expired") == before + 1
    finally:
        broker.close()
