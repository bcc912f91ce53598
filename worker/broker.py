"""What is waiting or in flight in the Redis broker, read from kombu's own keys.

kombu's Redis transport keeps a queue as a list (one per priority step) and every delivered but
unacked message (including countdown retries a worker holds) in the `unacked` hash, so a message
that exists anywhere is in one of them.
"""

from __future__ import annotations

import base64
import json
from typing import Any, cast

import redis

from worker.celery_app import QUEUES, RepobuildCelery

PRIORITY_SEP = "\x06\x16"  # a queue with priority p lives at f"{queue}{sep}{p}"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED = "unacked"


def _decode(raw: bytes) -> tuple[str, list[Any]] | None:
    try:
        msg = json.loads(raw)
        if isinstance(msg, list):  # unacked entries are [message, exchange, routing_key]
            msg = msg[0]
        body = json.loads(base64.b64decode(msg["body"]))
        return str(msg["headers"]["task"]), list(body[0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def messages(client: redis.Redis) -> list[tuple[str, list[Any]]]:
    """(task name, args) of every message in the broker."""
    found: list[tuple[str, list[Any]]] = []
    raws: list[bytes] = []
    for q in QUEUES:
        for p in PRIORITY_STEPS:
            raws.extend(cast(list[bytes], client.lrange(q if p == 0 else f"{q}{PRIORITY_SEP}{p}", 0, -1)))
    raws.extend(cast(list[bytes], client.hvals(UNACKED)))
    for raw in raws:
        decoded = _decode(raw)
        if decoded is not None:
            found.append(decoded)
    return found


def jobs_in_broker(client: redis.Redis) -> set[str]:
    return {str(args[0]) for _task, args in messages(client) if args}


def _client(app: RepobuildCelery) -> redis.Redis:
    return redis.Redis.from_url(app.repobuild_settings.redis_url or "", socket_timeout=10)


def batches_in_broker(app: RepobuildCelery, job_id: str, stage: str) -> set[int]:
    client = _client(app)
    try:
        return {int(args[2]) for task, args in messages(client)
                if task == "repobuild.batch" and len(args) == 3 and args[0] == job_id and args[1] == stage}
    finally:
        client.close()
