"""Which broker messages this worker holds, said in Redis while it lives, so a dead worker's are known at once.

kombu's Redis transport keeps every message a worker took and has not acked (running, reserved, or a countdown
it keeps in memory until its eta) in the `unacked` hash, and says nothing of who took it; after a `kill -9` it
gives the message back only after the visibility timeout (minutes: it must outlast the longest task). So each
worker writes, every `worker_alive_ttl_s / 4`, the delivery tags it holds to a key that expires after
`worker_alive_ttl_s`, and lists itself in a registry hash. A reader (worker/inflight.py) then tells a message
held by a live worker, however old, from one whose worker stopped saying so: the latter is lost.

The tags come from Celery's `task_received` signal, which the consumer sends for every message it takes,
countdowns included, and leave once the message is acked, rejected or requeued (kombu's `Message.acknowledged`).
The writer is a thread of the main process rather than a timer of the consumer's event loop: a solo pool runs
tasks in that loop, and a worker busy with a long task still holds its messages and must keep saying so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from typing import Any

import redis
from celery import bootsteps
from celery.signals import task_received
from celery.worker import state as worker_state

from pipeline.stores.keys import RedisKeys

logger = logging.getLogger(__name__)
BEATS_PER_TTL = 4


def new_worker_id() -> str:
    """Unique per process start: a worker restarted under the same name must not vouch for its dead self."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class HeldMessages:
    """The messages one consumer took and has not acked yet (thread-safe: the signal and the writer share it)."""

    def __init__(self, forget_after_s: float) -> None:
        self.forget_after_s = forget_after_s
        self._lock = threading.Lock()
        self._held: dict[str, tuple[Any, float]] = {}  # delivery tag → (kombu Message, when received)

    def add(self, message: Any) -> None:
        tag = getattr(message, "delivery_tag", None)
        if tag is not None:
            with self._lock:
                self._held[str(tag)] = (message, time.monotonic())

    def keep_only(self, tags: set[str]) -> None:
        with self._lock:
            self._held = {t: held for t, held in self._held.items() if t in tags}

    def tags(self) -> list[str]:
        """The tags still held; the acked ones are dropped on the way, and so are those older than kombu's
        visibility timeout (a channel closed by a broker outage cannot ack them: kombu has given them back)."""
        oldest = time.monotonic() - self.forget_after_s
        with self._lock:
            for tag in [t for t, (m, at) in self._held.items() if m.acknowledged or at < oldest]:
                del self._held[tag]
            return sorted(self._held)


def write_holds(client: redis.Redis, keys: RedisKeys, worker_id: str, tags: list[str], ttl_s: float,
                registry_ttl_s: int) -> None:
    """One round trip: the worker's held tags (expiring after `ttl_s`) and its entry in the registry."""
    with client.pipeline() as pipe:
        pipe.set(keys.worker_holds(worker_id), json.dumps(tags), px=int(ttl_s * 1000))
        pipe.hset(keys.workers, worker_id, repr(time.time()))
        pipe.expire(keys.workers, registry_ttl_s)
        pipe.execute()


class MessageHolds(bootsteps.StartStopStep):
    """A bootstep of the consumer blueprint: tracks the messages its consumer takes, says them every beat.

    It keeps saying through a consumer restart (`stop`, then `start` after a broker outage) the messages of the
    tasks running then, which still hold them. Only the worker's end (`shutdown`) stops it."""

    def __init__(self, c: Any, **kwargs: Any) -> None:
        settings = c.app.repobuild_settings
        self.keys = RedisKeys(settings.key_prefix)
        self.ttl_s = float(settings.worker_alive_ttl_s)
        self.registry_ttl_s = int(settings.state_ttl_s)
        self.worker_id = new_worker_id()
        self.held = HeldMessages(forget_after_s=float(settings.visibility_timeout_s))
        self.consumer = c
        self.client: redis.Redis | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        super().__init__(c, **kwargs)

    def start(self, c: Any) -> None:
        task_received.connect(self._received, weak=False, dispatch_uid=f"message-holds-{self.worker_id}")
        if self._thread is None:
            self.client = c.app.redis_client(socket_timeout=self.ttl_s / 2, socket_connect_timeout=self.ttl_s / 2)
            self._thread = threading.Thread(target=self._loop, name="repobuild-message-holds", daemon=True)
            self._thread.start()

    def stop(self, c: Any) -> None:
        # A consumer restart (a broker outage): Celery drops the messages it had reserved or kept for a countdown
        # (Consumer.on_close: a delivery tag cannot be acked on another channel), and kombu gives them back only
        # after the visibility timeout. Vouching for them until then hid them from the reconciler: the chaos suite
        # found a job stuck after Redis restarts, its stage's countdown continuation and five batches held by
        # nobody but said held. So only the tasks running now keep theirs.
        self.held.keep_only({str(getattr(r.message, "delivery_tag", "")) for r in list(worker_state.active_requests)})

    def shutdown(self, c: Any) -> None:
        task_received.disconnect(self._received, dispatch_uid=f"message-holds-{self.worker_id}")
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl_s)
            self._thread = None
        if self.client is not None:
            with contextlib.suppress(redis.exceptions.RedisError):  # gone either way once its ttl runs out
                self.client.delete(self.keys.worker_holds(self.worker_id))
            self.client.close()
            self.client = None

    def _received(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        if sender is self.consumer and request is not None:
            self.held.add(request.message)

    def _loop(self) -> None:
        client = self.client
        assert client is not None
        while True:
            try:
                write_holds(client, self.keys, self.worker_id, self.held.tags(), self.ttl_s, self.registry_ttl_s)
            except redis.exceptions.RedisError as exc:  # the broker is away: nothing is consumed either
                logger.warning("message holds: cannot write: %s", exc)
            if self._stop.wait(self.ttl_s / BEATS_PER_TTL):
                return
