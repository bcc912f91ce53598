"""What is waiting or in flight in the Redis broker, read from kombu's own keys.

kombu's Redis transport keeps a queue as a list (one per priority step) and every delivered but
unacked message (including countdown retries a worker holds) in the `unacked` hash, so a message
that exists anywhere is in one of them.

An unacked message of a worker that was killed stays in `unacked` until kombu restores it after the
visibility timeout (minutes, as it must outlast the longest task). Such a message is *overdue*: its
countdown (`eta`) or its delivery is long past and nobody holds its stage's lease. Counting it as in
flight would make a job wait out the visibility timeout; the reconciler re-drives it instead (a
duplicate is harmless: the lease lets one copy run).
"""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime
from typing import Any, cast

import redis

from worker.queues import QUEUES
from worker.repobuild_app import RepobuildCelery

PRIORITY_SEP = "\x06\x16"  # a queue with priority p lives at f"{queue}{sep}{p}"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"  # delivery tag → when it was delivered
OVERDUE_GRACE_S = 10.0


def _decode(raw: bytes) -> tuple[str, list[Any], float | None] | None:
    """(task, args, eta as a timestamp or None) of a raw kombu message."""
    try:
        msg = json.loads(raw)
        if isinstance(msg, list):  # unacked entries are [message, exchange, routing_key]
            msg = msg[0]
        body = json.loads(base64.b64decode(msg["body"]))
        eta = msg["headers"].get("eta")
        return str(msg["headers"]["task"]), list(body[0]), datetime.fromisoformat(eta).timestamp() if eta else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def messages(client: redis.Redis, overdue_after_s: float | None = None) -> list[tuple[str, list[Any]]]:
    """(task name, args) of every message in the broker; with `overdue_after_s`, leaving out unacked
    messages whose eta (or delivery) is that long past: their worker is most likely dead."""
    found: list[tuple[str, list[Any]]] = []
    for q in QUEUES:
        for p in PRIORITY_STEPS:
            for raw in cast(list[bytes], client.lrange(q if p == 0 else f"{q}{PRIORITY_SEP}{p}", 0, -1)):
                decoded = _decode(raw)
                if decoded is not None:
                    found.append(decoded[:2])
    unacked = cast(dict[bytes, bytes], client.hgetall(UNACKED))
    delivered = ({tag: score for tag, score in cast(list[tuple[bytes, float]],
                                                    client.zrange(UNACKED_INDEX, 0, -1, withscores=True))}
                 if overdue_after_s is not None else {})
    now = time.time()
    for tag, raw in unacked.items():
        decoded = _decode(raw)
        if decoded is None:
            continue
        task, args, eta = decoded
        if overdue_after_s is not None:
            due = max(eta or 0.0, delivered.get(tag, now))
            if now - due > overdue_after_s:
                continue
        found.append((task, args))
    return found


def jobs_in_broker(client: redis.Redis, overdue_after_s: float | None = None) -> set[str]:
    return {str(args[0]) for _task, args in messages(client, overdue_after_s) if args}


def _client(app: RepobuildCelery) -> redis.Redis:
    return app.redis_client(socket_timeout=10)


def overdue_after_s(app: RepobuildCelery) -> float:
    """How long past its eta (or delivery) a held message may wait for a live worker's free pool process:
    a task budget, plus a grace for the broker round trips."""
    return app.repobuild_settings.task_budget_s + OVERDUE_GRACE_S


def batches_in_broker(app: RepobuildCelery, job_id: str, stage: str) -> set[int]:
    """Batches of this stage waiting in a queue or held by a live worker (not by a dead one)."""
    client = _client(app)
    try:
        return {int(args[2]) for task, args in messages(client, overdue_after_s(app))
                if task == "repobuild.batch" and len(args) == 3 and args[0] == job_id and args[1] == stage}
    finally:
        client.close()
