"""The Celery app factory: every app-wide durability setting in one place (the per-task policy is policy.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

from kombu.entity import Queue

from pipeline.settings import Settings
from pipeline.stages.registry import STAGES
from worker import memory_release, tasks
from worker.broker_transport import TRANSPORT
from worker.heartbeat import ConsumingHeartbeat
from worker.message_holds import MessageHolds
from worker.policy import app_defaults
from worker.queues import QUEUE_IO, QUEUES, stage_queues
from worker.repobuild_app import RepobuildCelery


def _transport(url: str) -> dict[str, str]:
    """kombu's Redis transport with the fix that keeps a worker alive through quick broker restarts, for plain
    `redis://` URLs; `rediss://` (TLS defaults), `sentinel://` and `redis+socket://` keep kombu's own choice."""
    return {"broker_transport": TRANSPORT} if urlsplit(url).scheme == "redis" else {}


def create_celery(settings: Settings) -> RepobuildCelery:
    if not settings.redis_url:
        raise ValueError("REPOBUILD_REDIS_URL is not set")
    app = RepobuildCelery("repobuild", broker=settings.redis_url, set_as_current=False)
    app.repobuild_settings = settings
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        # Our own job state in Redis is the source of truth; Celery results would only duplicate it.
        task_ignore_result=True,
        result_backend=None,
        # Each process reserves one message at a time: a dead worker strands only what it was running.
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.soft_time_limit_s,
        task_time_limit=settings.hard_time_limit_s,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Above the hard time limit: a live worker's message is never redelivered while it runs.
            "visibility_timeout": settings.visibility_timeout_s,
            # kombu scans for unacked messages of dead workers every throttle-th tick of the interval;
            # the defaults (10 × 10 s) delay a dead worker's message by ~100 s more (FACTS.md).
            "unacked_restore_throttle": 1,
            "unacked_restore_interval": 1,
            # read only when REPOBUILD_REDIS_URL is a sentinel:// URL (pipeline/stores/redis_connect.py)
            "master_name": settings.redis_sentinel_master,
        },
        task_queues=[Queue(q) for q in QUEUES],
        task_default_queue=QUEUE_IO,
        task_routes={f"repobuild.{stage}": {"queue": q} for stage, q in stage_queues(STAGES).items()},
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        **app_defaults(),
        **_transport(settings.redis_url),
    )
    # the liveness heartbeat `repobuild probe worker` reads: beats only while the task consumer consumes
    app.steps["consumer"].add(ConsumingHeartbeat)
    # which broker messages this worker holds, so a dead worker's are re-driven at once (worker/inflight.py)
    app.steps["consumer"].add(MessageHolds)
    tasks.register(app)
    memory_release.connect()
    return app
