"""The worker's liveness heartbeat: a file its task consumer rewrites only while it really consumes.

A live PID, or a worker answering `celery inspect ping`, says little: the ping is answered by the remote-control
consumer on a channel of its own, while the task consumer may have stopped — after a Redis reconnection a worker
kept answering pings and took no task (celery#8030), and a `cancel_consumer` for all of its queues does the same on
purpose. So the heartbeat is a timer in the consumer's own event loop (a loop that is stuck fires no timer) that
rewrites the file only when

- the task consumer is subscribed to at least one queue, and
- it is not starved: messages waiting in its queues for `heartbeat_stall_s` while it had a free pool process and
  received none mean its consumer no longer reads from the broker, whatever it reports.

`repobuild probe worker` (api/cli/probe.py) fails once the file is older than its --max-age; Kubernetes' liveness
probe and the compose healthcheck run it. A worker busy in every process is healthy: with prefetch 1 it is not
asking for more, and its tasks are bounded by the hard time limit.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import bootsteps
from celery.worker import state

from worker.heartbeat_file import write_beat

logger = logging.getLogger(__name__)


@dataclass
class ConsumptionWatch:
    """Whether a subscribed consumer is still reading messages, from what it is fed and what waits for it."""

    stall_s: float
    waiting_since: float | None = None  # since when messages wait while a process is free, with none received

    def received(self) -> None:
        self.waiting_since = None

    def healthy(self, now: float, *, subscribed: bool, free_slot: bool, backlog: int) -> bool:
        if not subscribed:
            self.waiting_since = None
            return False
        if backlog == 0 or not free_slot:  # nothing to take, or no room to take it: nothing to judge
            self.waiting_since = None
            return True
        if self.waiting_since is None:
            self.waiting_since = now
        return now - self.waiting_since < self.stall_s


class ConsumingHeartbeat(bootsteps.StartStopStep):
    """A bootstep of the consumer blueprint (after its Tasks step, which creates the task consumer)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        settings = c.app.repobuild_settings
        self.path = Path(settings.heartbeat_file)
        self.interval = float(settings.heartbeat_interval_s)
        self.watch = ConsumptionWatch(stall_s=float(settings.heartbeat_stall_s))
        self.client: redis.Redis | None = None
        self.tref: Any = None
        self.first: Any = None
        super().__init__(c, **kwargs)

    def start(self, c: Any) -> None:
        self.client = c.app.redis_client(socket_timeout=2, socket_connect_timeout=2)
        self.watch.received()  # a fresh consumer has not been starved yet
        c.on_task_message.add(self._on_message)
        self.tref = c.timer.call_repeatedly(self.interval, self.beat, (c,), priority=10)
        # the first beat as soon as the event loop runs: the task consumer starts consuming only then
        self.first = c.timer.call_after(0.1, self.beat, (c,), priority=10)

    def stop(self, c: Any) -> None:
        # The file stays: a short broker outage restarts the consumer, and the probe's --max-age is the grace.
        for entry in (self.tref, self.first):
            if entry is not None:
                entry.cancel()
        self.tref = self.first = None
        c.on_task_message.discard(self._on_message)
        if self.client is not None:
            self.client.close()
            self.client = None

    def shutdown(self, c: Any) -> None:
        self.stop(c)
        self.path.unlink(missing_ok=True)  # a worker that ended is not alive, whatever its last beat said

    def _on_message(self, request: Any) -> None:
        self.watch.received()

    def beat(self, c: Any) -> None:
        consumer = getattr(c, "task_consumer", None)
        queues = [q.name for q in consumer.queues if consumer.consuming_from(q)] if consumer is not None else []
        free_slot = len(state.reserved_requests) < max(1, int(getattr(c.controller, "concurrency", 1) or 1))
        backlog = self._backlog(queues) if queues and free_slot else 0
        if self.watch.healthy(time.monotonic(), subscribed=bool(queues), free_slot=free_slot, backlog=backlog):
            try:
                write_beat(self.path)
            except OSError as exc:  # a full or read-only disk: the probe will say so by the stale file
                logger.warning("heartbeat: cannot write %s: %s", self.path, exc)
        elif queues:
            logger.warning("heartbeat: %d messages wait in %s and none was received for %.0f s; not beating",
                           backlog, ",".join(queues), self.watch.stall_s)

    def _backlog(self, queues: list[str]) -> int:
        """Messages waiting in these queues (kombu's Redis transport keeps each queue as a list of its name)."""
        if self.client is None:
            return 0
        with contextlib.suppress(redis.exceptions.RedisError):  # the broker is the consumer's to judge: no verdict
            return sum(int(self.client.llen(q)) for q in queues)
        return 0
