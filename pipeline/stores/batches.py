"""State of a stage's fanned-out batches: which finished, which failed, when each was sent.

The join of a fan-out is a set in Redis (no Celery chord): a batch is finished once its number is
in the `done` set; the stage polls the set. Batches that vanished (their worker died and their
message is not back yet) are found by the stage and sent again; doing a batch twice is harmless.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, cast

import redis

from pipeline.stores.keys import RedisKeys, lease_holder
from pipeline.stores.messages import PATH_MAX_CHARS, capped


class BatchState(Protocol):
    """One stage's batches of one job. `JobStore.batches(job_id, stage)` hands it out."""

    def mark_sent(self, batches: list[int]) -> float:
        """These batches were sent now; returns that time, which their messages carry (`sent_at`)."""
        ...

    def mark_started(self, n: int) -> None: ...

    def runs(self) -> dict[int, int]:
        """How often each batch was started."""
        ...

    def add_seconds(self, n: int, seconds: float) -> None:
        """Batch n's task ran this long (a run that failed counts too: it was work done)."""
        ...

    def seconds(self) -> float:
        """Task seconds of all the batches so far."""
        ...

    def mark_ended(self, n: int) -> None:
        """A run of batch n ended in the task's hands, whatever its outcome (not by its process dying)."""
        ...

    def lost_runs(self, n: int) -> int:
        """Runs of batch n whose process died under them: started, never ended."""
        ...

    def note_item(self, n: int, item: str) -> None:
        """Batch n takes up `item` (a file) next: what its dead-letter names if its process dies there."""
        ...

    def noted_item(self, n: int) -> str | None: ...

    def mark_done(self, n: int) -> None:
        """Batch n finished; a failure recorded for it before (then retried) no longer counts."""
        ...

    def mark_failed(self, n: int, error: str) -> None: ...

    def done(self) -> set[int]: ...

    def is_done(self, n: int) -> bool: ...

    def failed(self) -> dict[int, str]: ...

    def forget_failed(self) -> list[int]:
        """Drop every failure mark (a retry of the job sends those batches again); which batches they were."""
        ...

    def sent_at(self) -> dict[int, float]: ...

    def leased(self, batches: set[int]) -> set[int]:
        """Those of `batches` that a worker holds the lease of right now."""
        ...


class RedisBatchState:
    def __init__(self, client: redis.Redis, keys: RedisKeys, ttl_s: int, job_id: str, stage: str) -> None:
        self.r, self.keys, self.ttl_s, self.job_id, self.stage = client, keys, ttl_s, job_id, stage
        self.k = keys.batches(job_id, stage)

    def _expire(self, pipe: Any) -> None:
        for k in self.k.all():
            pipe.expire(k, self.ttl_s)

    def mark_sent(self, batches: list[int]) -> float:
        now = time.time()
        if not batches:
            return now
        with self.r.pipeline() as pipe:
            pipe.hset(self.k.sent, mapping={str(n): repr(now) for n in batches})
            self._expire(pipe)
            pipe.execute()
        return now

    def mark_started(self, n: int) -> None:
        with self.r.pipeline() as pipe:
            pipe.hincrby(self.k.runs, str(n), 1)
            self._expire(pipe)
            pipe.execute()

    def runs(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in cast(dict[str, str], self.r.hgetall(self.k.runs)).items()}

    def add_seconds(self, n: int, seconds: float) -> None:
        with self.r.pipeline() as pipe:
            pipe.hincrbyfloat(self.k.seconds, str(n), seconds)
            self._expire(pipe)
            pipe.execute()

    def seconds(self) -> float:
        return sum(float(v) for v in cast(list[str], self.r.hvals(self.k.seconds)))

    def mark_ended(self, n: int) -> None:
        with self.r.pipeline() as pipe:
            pipe.hincrby(self.k.ended, str(n), 1)
            self._expire(pipe)
            pipe.execute()

    def lost_runs(self, n: int) -> int:
        with self.r.pipeline() as pipe:
            pipe.hget(self.k.runs, str(n))
            pipe.hget(self.k.ended, str(n))
            runs, ended = pipe.execute()
        return int(runs or 0) - int(ended or 0)

    def note_item(self, n: int, item: str) -> None:
        with self.r.pipeline(transaction=False) as pipe:
            pipe.hset(self.k.items, str(n), capped(item, PATH_MAX_CHARS))
            pipe.expire(self.k.items, self.ttl_s)
            pipe.execute()

    def noted_item(self, n: int) -> str | None:
        return cast(str | None, self.r.hget(self.k.items, str(n)))

    def mark_done(self, n: int) -> None:
        with self.r.pipeline() as pipe:
            pipe.sadd(self.k.done, str(n))
            pipe.hdel(self.k.failed, str(n))
            self._expire(pipe)
            pipe.execute()

    def mark_failed(self, n: int, error: str) -> None:
        with self.r.pipeline() as pipe:
            pipe.hset(self.k.failed, str(n), capped(error))
            self._expire(pipe)
            pipe.execute()

    def done(self) -> set[int]:
        return {int(x) for x in cast(set[str], self.r.smembers(self.k.done))}

    def is_done(self, n: int) -> bool:
        return bool(self.r.sismember(self.k.done, str(n)))

    def failed(self) -> dict[int, str]:
        return {int(k): v for k, v in cast(dict[str, str], self.r.hgetall(self.k.failed)).items()}

    def forget_failed(self) -> list[int]:
        with self.r.pipeline() as pipe:  # MULTI: no failure recorded between the read and the delete is lost
            pipe.hkeys(self.k.failed)
            pipe.delete(self.k.failed)
            keys, _ = pipe.execute()
        return sorted(int(k) for k in cast(list[str], keys))

    def sent_at(self) -> dict[int, float]:
        return {int(k): float(v) for k, v in cast(dict[str, str], self.r.hgetall(self.k.sent)).items()}

    def leased(self, batches: set[int]) -> set[int]:
        if not batches:
            return set()
        ordered = sorted(batches)
        with self.r.pipeline() as pipe:
            for n in ordered:
                pipe.exists(self.keys.lease(self.job_id, lease_holder(self.stage, n)))
            flags = pipe.execute()
        return {n for n, held in zip(ordered, flags, strict=True) if held}
