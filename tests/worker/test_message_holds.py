"""Tier 2: a message held by a live worker is in flight however old it is; the moment its worker is dead, it is lost.

Real Redis, a real worker process with one pool process, kept busy by a notify stage whose callback receiver holds
the request open. The worker took a second job's stage message as a countdown before, while its pool was free;
the countdown runs out and the message waits in the worker's memory for the busy pool (the case a rule by age
got wrong). The reconciler must leave it
alone while the worker lives, and re-drive it, as held by a dead worker, once the worker is killed with -9.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis

from api.cli.local_services import PrivateRedis
from benchmarks.harness import wait_until
from pipeline.models import JobSpec, SourceSpec, StageStatus
from pipeline.plans import stages_for
from pipeline.settings import Settings
from pipeline.stores.jobs_redis import RedisJobStore
from pipeline.stores.keys import RedisKeys
from tests.chaos.redis_faults import aof_redis_server  # noqa: F401 - this module's Redis keeps an AOF
from tests.conftest import DEMO_REPO, Workers
from worker.factory import create_celery
from worker.inflight import UNACKED, UNACKED_INDEX, broker_view
from worker.reconciler import ORPHANED, reconcile_once
from worker.repobuild_app import RepobuildCelery
from worker.submission import submit

pytestmark = pytest.mark.integration
OLD_S = 12.0  # how long past its countdown the held message waits: longer than a task budget plus a grace


class HeldOpen:
    """A callback receiver that keeps each request open until released, so the worker's only process stays busy."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.arrived = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.arrived.set()
                outer.release.wait(120)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/callback"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def held_open() -> Iterator[HeldOpen]:
    server = HeldOpen()
    yield server
    server.stop()


def fetch_after_countdown(app: RepobuildCelery, store: RedisJobStore, job_id: str, countdown: float) -> None:
    """A stored job whose first stage's message is sent with a countdown (a retry's backoff, a fan-out's poll)."""
    store.create(JobSpec(job_id=job_id, task="process-all", source=SourceSpec(path=str(DEMO_REPO))),
                 stages_for("process-all"))
    state = store.stage(job_id, "fetch")
    state.status, state.enqueued_at = StageStatus.QUEUED, time.time()
    store.put_stage(job_id, state)
    app.tasks["repobuild.fetch"].si(job_id).apply_async(countdown=countdown)


def _held_since(broker: redis.Redis, tag: bytes) -> float | None:
    score = broker.zscore(UNACKED_INDEX, tag)
    return float(score) if score is not None else None


def _unacked_tag_of(broker: redis.Redis, job_id: str) -> bytes | None:
    for tag, raw in cast(dict[bytes, bytes], broker.hgetall(UNACKED)).items():
        if job_id.encode() in base64.b64decode(json.loads(raw)[0]["body"]):
            return tag
    return None


def test_a_live_workers_old_message_stays_in_flight_and_a_dead_ones_is_re_driven_at_once(
        settings: Settings, workers: Workers, store: RedisJobStore, held_open: HeldOpen) -> None:
    settings = settings.with_(worker_alive_ttl_s=1.0, task_budget_s=1.0, callback_timeout_s=120.0)
    app: RepobuildCelery = create_celery(settings)
    app.store = store
    worker = workers.start(settings, concurrency=1)

    # Job 2 waits on a countdown (a retry's backoff, a fan-out's poll); the worker takes it while its pool is free
    # and keeps it in memory until its eta.
    fetch_after_countdown(app, store, "held", 5)
    broker = app.redis_client()
    try:
        tag = wait_until("the countdown held by the worker", lambda: _unacked_tag_of(broker, "held"), 60)
        # Job 1 fails at once (a task the service cannot run); its notify takes the only pool process before the
        # countdown is due, so the countdown waits past its eta in the worker's memory.
        submit(app, JobSpec(job_id="busy", task="no-such-task", callback_url=held_open.url))
        assert held_open.arrived.wait(60), "notify never called back"
        assert broker.hexists(UNACKED, tag), "the countdown ran before the pool got busy"
        since = _held_since(broker, tag)
        assert since is not None
        # Old by any clock: its eta and its delivery long past, many times the time a dead worker's word lasts.
        wait_until("the held message to grow old", lambda: time.time() - since > OLD_S, OLD_S + 30)
        assert worker.alive() and not held_open.release.is_set()
        view = broker_view(app, broker)
        assert ("held", "fetch") in view.stages() and view.orphaned == []
        assert reconcile_once(app, broker) == []
        assert [e for _id, e in store.events("held") if e.get("type") == "redrive"] == []  # nor did its own

        worker.kill9()
        wait_until("the dead worker's message seen as orphaned",
                   lambda: ("held", "fetch") in (lambda v: v.stages(v.orphaned))(broker_view(app, broker)), 30)
        assert ("held", "fetch") in reconcile_once(app, broker)
        redrives = [e for _id, e in store.events("held") if e.get("type") == "redrive"]
        assert len(redrives) == 1 and ORPHANED in redrives[0]["message"], redrives
        # kombu has not given the message back (its visibility timeout is minutes): it is still the dead one's
        assert broker.hexists(UNACKED, tag)
    finally:
        broker.close()



def test_after_a_broker_restart_the_worker_no_longer_vouches_for_the_countdown_it_dropped(
        settings: Settings, workers: Workers, store: RedisJobStore, redis_server: PrivateRedis) -> None:
    """Celery drops the countdowns and reserved messages of a consumer whose connection broke (their delivery tags
    belong to the old channel), and kombu gives them back only after its visibility timeout: the worker must stop
    saying it holds them, so the reconciler re-drives them at once instead of leaving the job stuck."""
    settings = settings.with_(worker_alive_ttl_s=1.0)
    app: RepobuildCelery = create_celery(settings)
    app.store = store
    worker = workers.start(settings, concurrency=1)
    fetch_after_countdown(app, store, "later", 600)
    broker = app.redis_client()
    try:
        tag = wait_until("the countdown held by the worker", lambda: _unacked_tag_of(broker, "later"), 60)
        wait_until("the worker saying it holds it", lambda: tag.decode() in _all_holds(broker, settings), 30)
        assert reconcile_once(app, broker) == []  # a live worker's countdown: left alone

        redis_server.restart(down_s=2.0)  # AOF: the message and its unacked entry come back with the server
        wait_until("the worker back, no longer vouching for the dropped countdown",
                   lambda: _holds_written_since_restart(broker, settings) and
                   tag.decode() not in _all_holds(broker, settings), 60)
        assert worker.alive() and broker.hexists(UNACKED, tag)  # kombu has not given it back: we must
        # re-driven as orphaned: by the worker's own reconciler (every second here), or by this one if first
        reconcile_once(app, broker)
        redrives = wait_until("the countdown re-driven", lambda: [
            e for _id, e in store.events("later") if e.get("type") == "redrive"], 30)
        assert all(ORPHANED in e["message"] for e in redrives), redrives
    finally:
        broker.close()


def _all_holds(broker: redis.Redis, settings: Settings) -> set[str]:
    keys = RedisKeys(settings.key_prefix)
    held: set[str] = set()
    for worker_id in cast(dict[bytes, bytes], broker.hgetall(keys.workers)):
        raw = broker.get(keys.worker_holds(worker_id.decode()))
        held.update(json.loads(raw) if raw else [])
    return held


def _holds_written_since_restart(broker: redis.Redis, settings: Settings) -> bool:
    """Some worker's holds key exists again: the restarted server came back empty of expiring keys or with them."""
    keys = RedisKeys(settings.key_prefix)
    return any(broker.exists(keys.worker_holds(w.decode()))
               for w in cast(dict[bytes, bytes], broker.hgetall(keys.workers)))
