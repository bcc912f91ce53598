"""Re-drives stuck jobs, so a job never hangs.

A stage is stuck when it is `running` but its lease expired (the worker died), or `pending`/`queued`
with no message for the job in the broker (a chain lost its tail — celery#6631 — or Redis lost
the message). Every worker runs this loop; a Redis lock lets one of them act at a time.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from typing import Any, cast

import redis

from pipeline.checkpoints import JobStore, JobView, build_finished
from pipeline.models import JobStatus, StageState, StageStatus
from pipeline.plans import NOTIFY
from worker.celery_app import QUEUES, RepobuildCelery
from worker.chains import enqueue_from

log = logging.getLogger("repobuild.reconciler")

PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport: a queue with priority p lives at f"{queue}{sep}{p}"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED = "unacked"  # kombu's hash of delivered, not yet acked messages (incl. countdown retries)
GRACE_S = 10.0  # time a freshly enqueued message has to show up before we call it lost


def _message_job(raw: str) -> str | None:
    try:
        msg = json.loads(raw)
        if isinstance(msg, list):  # unacked entries are [message, exchange, routing_key]
            msg = msg[0]
        body = json.loads(base64.b64decode(msg["body"]))
        args = body[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def jobs_in_broker(client: redis.Redis) -> set[str]:
    """Job ids that have a message waiting or in flight anywhere in the broker."""
    found: set[str] = set()
    for q in QUEUES:
        for p in PRIORITY_STEPS:
            key = q if p == 0 else f"{q}{PRIORITY_SEP}{p}"
            for raw in cast(list[bytes], client.lrange(key, 0, -1)):
                if (job := _message_job(raw.decode())) is not None:
                    found.add(job)
    for raw in cast(list[bytes], client.hvals(UNACKED)):
        if (job := _message_job(raw.decode())) is not None:
            found.add(job)
    return found


def stuck_stage(store: JobStore, job: JobView, in_broker: set[str], now: float) -> StageState | None:
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        stage = job.next_stage()
    elif job.status == JobStatus.COMPLETED or (job.status in (JobStatus.FAILED, JobStatus.CANCELLED)):
        stage = job.stage(NOTIFY) if any(s.name == NOTIFY for s in job.stages) else None
        if job.status == JobStatus.COMPLETED and not build_finished(job):
            stage = None
    else:
        stage = None
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
    in_broker = jobs_in_broker(broker)
    now = time.time()
    actions: list[tuple[str, str]] = []
    for job_id in store.active_ids():
        try:
            job = store.get(job_id)
        except KeyError:
            store.deactivate(job_id)
            continue
        if job.status in (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.COMPLETED) and not any(
                s.name == NOTIFY for s in job.stages):
            store.deactivate(job_id)
            continue
        stage = stuck_stage(store, job, in_broker, now)
        if stage is None:
            continue
        reason = "lease expired" if stage.status == StageStatus.RUNNING else "no message in flight"
        store.event(job_id, "redrive", f"{stage.name}: re-driven by the reconciler ({reason})", stage=stage.name)
        log.warning("re-driving %s/%s: %s", job_id, stage.name, reason)
        enqueue_from(app, job_id, stage.name)
        actions.append((job_id, stage.name))
    return actions


class Reconciler:
    """A daemon thread in each worker's main process; one acts at a time (Redis lock)."""

    def __init__(self, app: RepobuildCelery) -> None:
        self.app = app
        self.interval = app.repobuild_settings.reconcile_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="repobuild-reconciler", daemon=True)
        self.broker: Any = redis.Redis.from_url(cast(str, app.repobuild_settings.redis_url), socket_timeout=10)
        self.lock_key = f"{app.repobuild_settings.key_prefix}reconciler"

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
