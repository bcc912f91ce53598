"""Re-drives stuck jobs, so a job never hangs.

A stage is stuck when it is `running` but its lease expired (the worker died), or `pending`/`queued`
with no message for the job in the broker (a chain lost its tail — celery#6631 — or Redis lost
the message). Every worker runs this loop; a Redis lock lets one of them act at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

from pipeline.models import StageState, StageStatus
from pipeline.plans import job_is_over, stage_to_drive
from pipeline.stores.jobs import JobStore, JobView
from pipeline.stores.keys import RedisKeys
from worker import metrics
from worker.chains import enqueue_from
from worker.inflight import jobs_in_broker, overdue_after_s
from worker.repobuild_app import RepobuildCelery
from worker.stage_task import run_died

log = logging.getLogger("repobuild.reconciler")

GRACE_S = 10.0  # time a freshly enqueued message has to show up before we call it lost


def stuck_stage(store: JobStore, job: JobView, in_broker: set[str], now: float) -> StageState | None:
    stage = stage_to_drive(job)
    if stage is None or stage.status in (StageStatus.DONE, StageStatus.FAILED):
        return None
    job_id = job.spec.job_id
    if store.lease_held(job_id, stage.name):
        return None
    if stage.status == StageStatus.RUNNING:
        return stage
    if job_id in in_broker or now - (stage.enqueued_at or 0) < GRACE_S:
        return None
    return stage


def reconcile_once(app: RepobuildCelery, broker: redis.Redis) -> list[tuple[str, str]]:
    store: JobStore = app.store
    now = time.time()
    # A live worker starts a message it holds within a task budget of its eta (its pool is busy at
    # most that long); one held longer belongs to a dead worker.
    in_broker = jobs_in_broker(broker, overdue_after_s(app))
    actions: list[tuple[str, str]] = []
    for job_id in store.active_ids():
        try:
            job = store.get(job_id)
        except KeyError:
            store.deactivate(job_id)
            continue
        if job_is_over(job):
            store.deactivate(job_id)
            continue
        stage = stuck_stage(store, job, in_broker, now)
        if stage is None:
            continue
        reason = "lease expired" if stage.status == StageStatus.RUNNING else "no message in flight"
        if stage.status == StageStatus.RUNNING and run_died(store, job_id, stage):
            # Its run died without a word; the next run sees `queued`, so the death is counted here.
            stage.lost_runs += 1
            store.put_stage(job_id, stage)
        store.event(job_id, "redrive", f"{stage.name}: re-driven by the reconciler ({reason})", stage=stage.name)
        log.warning("re-driving %s/%s: %s", job_id, stage.name, reason)
        enqueue_from(app, job_id, stage.name)
        metrics.REDRIVES.labels(stage.name, reason.replace(" ", "-")).inc()
        actions.append((job_id, stage.name))
    return actions


class Reconciler:
    """A daemon thread in each worker's main process; one acts at a time (Redis lock)."""

    def __init__(self, app: RepobuildCelery) -> None:
        self.app = app
        self.interval = app.repobuild_settings.reconcile_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="repobuild-reconciler", daemon=True)
        self.broker: Any = app.redis_client(socket_timeout=10)
        self.lock_key = RedisKeys(app.repobuild_settings.key_prefix).reconciler_lock

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while True:
            try:
                if self.broker.set(self.lock_key, "1", nx=True, px=int(self.interval * 1000 * 0.9)):
                    reconcile_once(self.app, self.broker)
            except redis.exceptions.RedisError as exc:
                log.warning("reconciler: redis unavailable: %s", exc)
            if self._stop.wait(self.interval):
                return
