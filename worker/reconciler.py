"""Re-drives stuck jobs, so a job never hangs.

A stage is stuck when it is `running` but its lease expired (the worker died), or `pending`/`queued`
with no live message of its own in the broker: its worker was killed while holding it (a countdown, or a
message taken but not started — found at once, worker/inflight.py), a chain lost its tail (celery#6631),
or Redis lost the message. The batch messages of a fanned-out stage do not count for the stage: they do
not run its coordinating task, which alone reports progress and assembles. Every worker runs this loop;
a Redis lock lets one of them act at a time, and a new worker takes its turn as soon as the lock is free.
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
from worker.inflight import BrokerView, broker_view
from worker.repobuild_app import RepobuildCelery
from worker.stage_task import run_died

log = logging.getLogger("repobuild.reconciler")

GRACE_S = 10.0  # time a freshly enqueued message has to show up before we call it lost


ORPHANED = "held by a dead worker"


def stuck_stage(store: JobStore, job: JobView, view: BrokerView, now: float) -> tuple[StageState, str] | None:
    """The stage to re-drive and why, or None."""
    stage = stage_to_drive(job)
    if stage is None or stage.status in (StageStatus.DONE, StageStatus.FAILED):
        return None
    job_id = job.spec.job_id
    if store.lease_held(job_id, stage.name):
        return None
    if stage.status == StageStatus.RUNNING:
        return stage, "lease expired"
    key = (job_id, stage.name)
    if key in view.stages():
        return None
    if key in view.stages(view.orphaned):
        # The message exists and nobody alive holds it: it is lost now, no grace to wait for.
        return stage, ORPHANED
    if now - (stage.enqueued_at or 0) < GRACE_S:
        return None
    return stage, "no message in flight"


def reconcile_once(app: RepobuildCelery, broker: redis.Redis) -> list[tuple[str, str]]:
    store: JobStore = app.store
    now = time.time()
    view = broker_view(app, broker)
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
        stuck = stuck_stage(store, job, view, now)
        if stuck is None:
            continue
        stage, reason = stuck
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
            wait = self.interval
            try:
                if self.broker.set(self.lock_key, "1", nx=True, px=int(self.interval * 1000 * 0.9)):
                    reconcile_once(self.app, self.broker)
                else:
                    # Another worker's turn, or a dead one's: try again when its lock runs out rather than a
                    # whole interval later, so a worker started after a crash acts within seconds.
                    wait = lock_wait_s(self.broker.pttl(self.lock_key), self.interval)
            except redis.exceptions.RedisError as exc:
                log.warning("reconciler: redis unavailable: %s", exc)
            if self._stop.wait(wait):
                return


def lock_wait_s(pttl_ms: int, interval: float) -> float:
    """How long to wait for a reconciler lock that expires in `pttl_ms` (Redis: -2 gone, -1 no expiry)."""
    if pttl_ms == -1:
        return interval
    return min(interval, max(0.05, pttl_ms / 1000 + 0.05))
