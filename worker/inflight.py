"""What is waiting or in flight in the Redis broker, read from kombu's own keys, and which of it is lost.

kombu's Redis transport keeps a queue as a list (one per priority step) and every delivered but unacked message
(running, reserved, or a countdown a worker holds until its eta) in the `unacked` hash, so a message that exists
anywhere is in one of them.

An unacked message of a worker that was killed stays in `unacked` until kombu restores it after the visibility
timeout (minutes, as it must outlast the longest task). Each live worker says which tags it holds
(worker/message_holds.py), so an unacked message is *orphaned* once no live worker claims it and it was delivered
longer ago than a worker takes to claim what it receives. Orphaned messages are lost for the reconciler and for a
stage looking for its lost batches; a message a live worker holds is never, however old (a long countdown, a busy
pool). Re-driving an orphan makes a duplicate once kombu restores it, which is harmless: leases let one copy run.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from pipeline.stores.keys import RedisKeys
from worker.queues import QUEUES
from worker.repobuild_app import RepobuildCelery

PRIORITY_SEP = "\x06\x16"  # a queue with priority p lives at f"{queue}{sep}{p}"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"  # delivery tag → when it was delivered
BATCH_TASK = "repobuild.batch"

Message = tuple[str, list[Any]]  # (task name, args)


def _decode(raw: bytes) -> Message | None:
    """(task, args) of a raw kombu message."""
    try:
        msg = json.loads(raw)
        if isinstance(msg, list):  # unacked entries are [message, exchange, routing_key]
            msg = msg[0]
        body = json.loads(base64.b64decode(msg["body"]))
        return str(msg["headers"]["task"]), list(body[0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


@dataclass
class BrokerView:
    """The broker's messages at one moment: `live` (waiting in a queue, or held by a live worker) and `orphaned`
    (held unacked by a worker that no longer says so)."""

    live: list[Message] = field(default_factory=list)
    orphaned: list[Message] = field(default_factory=list)

    def stages(self, messages: list[Message] | None = None) -> set[tuple[str, str]]:
        """(job id, stage) of each stage task's message (not its batches'): `live` unless told otherwise."""
        return {(str(args[0]), task.removeprefix("repobuild.")) for task, args in
                (self.live if messages is None else messages)
                if args and task.startswith("repobuild.") and task != BATCH_TASK}

    def batches(self, job_id: str, stage: str) -> set[int]:
        """Batches of this stage waiting in a queue or held by a live worker."""
        return {int(args[2]) for task, args in self.live
                if task == BATCH_TASK and len(args) == 3 and args[0] == job_id and args[1] == stage}


def read_view(client: redis.Redis, keys: RedisKeys, claim_grace_s: float) -> BrokerView:
    """Two round trips, whatever the number of messages: the queues, the unacked hash and its index and the
    worker registry in one; the live workers' claims (and pruning the registry of dead ones) in the other.

    `claim_grace_s`: how long a worker may take to claim a message it received (its beat interval, plus slack).
    """
    with client.pipeline() as pipe:  # MULTI: one consistent moment of the broker
        for name in _queue_lists():
            pipe.lrange(name, 0, -1)
        pipe.hgetall(UNACKED)
        pipe.zrange(UNACKED_INDEX, 0, -1, withscores=True)
        pipe.hkeys(keys.workers)
        *queued, unacked, index, workers = pipe.execute()
    worker_ids = [_text(w) for w in cast(list[Any], workers)]
    claimed: set[str] = set()
    if worker_ids:
        with client.pipeline() as pipe:
            pipe.mget([keys.worker_holds(w) for w in worker_ids])
            claims = cast(list[Any], pipe.execute()[0])
            dead = [w for w, claim in zip(worker_ids, claims, strict=True) if claim is None]
            for claim in claims:
                if claim is not None:
                    claimed.update(str(t) for t in json.loads(claim))
            if dead:
                pipe.hdel(keys.workers, *dead)
                pipe.execute()
    view = BrokerView()
    for raws in queued:
        view.live.extend(m for m in map(_decode, cast(list[bytes], raws)) if m is not None)
    delivered = {_text(tag): float(score) for tag, score in cast(list[tuple[Any, float]], index)}
    now = time.time()
    for raw_tag, raw in cast(dict[Any, bytes], unacked).items():
        decoded = _decode(raw)
        if decoded is None:
            continue
        tag = _text(raw_tag)
        if tag in claimed or now - delivered.get(tag, now) < claim_grace_s:
            view.live.append(decoded)
        else:
            view.orphaned.append(decoded)
    return view


def _queue_lists() -> list[str]:
    return [q if p == 0 else f"{q}{PRIORITY_SEP}{p}" for q in QUEUES for p in PRIORITY_STEPS]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def unacked_messages(client: redis.Redis) -> list[Message]:
    """(task name, args) of every message some worker took and has not acked, alive or dead."""
    return [m for m in map(_decode, cast(dict[Any, bytes], client.hgetall(UNACKED)).values()) if m is not None]


def messages(client: redis.Redis) -> list[Message]:
    """(task name, args) of every message in the broker, held by a live worker or not."""
    with client.pipeline() as pipe:
        for name in _queue_lists():
            pipe.lrange(name, 0, -1)
        queued = pipe.execute()
    return [m for raws in queued for m in map(_decode, cast(list[bytes], raws)) if m is not None] + \
        unacked_messages(client)


def jobs_in_broker(client: redis.Redis) -> set[str]:
    return {str(args[0]) for _task, args in messages(client) if args}


def claim_grace_s(app: RepobuildCelery) -> float:
    """A live worker claims a message within one beat of receiving it; its claims expire after the ttl."""
    return float(app.repobuild_settings.worker_alive_ttl_s)


def broker_view(app: RepobuildCelery, client: redis.Redis) -> BrokerView:
    return read_view(client, RedisKeys(app.repobuild_settings.key_prefix), claim_grace_s(app))


def batches_in_broker(app: RepobuildCelery, job_id: str, stage: str) -> set[int]:
    """Batches of this stage waiting in a queue or held by a live worker (not by a dead one)."""
    client = app.redis_client(socket_timeout=10)
    try:
        return broker_view(app, client).batches(job_id, stage)
    finally:
        client.close()
