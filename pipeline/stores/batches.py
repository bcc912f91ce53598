"""Redis state of a stage's fanned-out batches: which finished, which failed, when each was sent.

The join of a fan-out is a set in Redis (no Celery chord): a batch is finished once its number is
in the `done` set; the stage polls the set. Batches that vanished (their worker died and their
message is not back yet) are found by the stage and sent again; doing a batch twice is harmless.
"""

from __future__ import annotations

import time
from typing import cast

from pipeline.stores.jobs import JobStore


class BatchState:
    def __init__(self, store: JobStore, job_id: str, stage: str) -> None:
        self.store, self.job_id, self.stage = store, job_id, stage
        base = f"{store.prefix}job:{job_id}:batches:{stage}"
        self.k_done, self.k_failed, self.k_sent = f"{base}:done", f"{base}:failed", f"{base}:sent"
        self.k_runs = f"{base}:runs"  # how often each batch was started: proof that finished ones are not redone

    def lease_key(self, n: int) -> str:
        return self.store.k_lease(self.job_id, f"{self.stage}#{n}")

    def _expire(self, pipe: object) -> None:
        for k in (self.k_done, self.k_failed, self.k_sent, self.k_runs):
            pipe.expire(k, self.store.ttl_s)  # type: ignore[attr-defined]

    def mark_sent(self, batches: list[int]) -> None:
        if not batches:
            return
        now = time.time()
        with self.store.r.pipeline() as pipe:
            pipe.hset(self.k_sent, mapping={str(n): repr(now) for n in batches})
            self._expire(pipe)
            pipe.execute()

    def mark_started(self, n: int) -> None:
        with self.store.r.pipeline() as pipe:
            pipe.hincrby(self.k_runs, str(n), 1)
            self._expire(pipe)
            pipe.execute()

    def runs(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in cast(dict[str, str], self.store.r.hgetall(self.k_runs)).items()}

    def mark_done(self, n: int) -> None:
        with self.store.r.pipeline() as pipe:
            pipe.sadd(self.k_done, str(n))
            pipe.hdel(self.k_failed, str(n))
            self._expire(pipe)
            pipe.execute()

    def mark_failed(self, n: int, error: str) -> None:
        with self.store.r.pipeline() as pipe:
            pipe.hset(self.k_failed, str(n), error)
            self._expire(pipe)
            pipe.execute()

    def done(self) -> set[int]:
        return {int(x) for x in cast(set[str], self.store.r.smembers(self.k_done))}

    def is_done(self, n: int) -> bool:
        return bool(self.store.r.sismember(self.k_done, str(n)))

    def failed(self) -> dict[int, str]:
        return {int(k): v for k, v in cast(dict[str, str], self.store.r.hgetall(self.k_failed)).items()}

    def sent_at(self) -> dict[int, float]:
        return {int(k): float(v) for k, v in cast(dict[str, str], self.store.r.hgetall(self.k_sent)).items()}

    def leased(self, batches: set[int]) -> set[int]:
        if not batches:
            return set()
        ordered = sorted(batches)
        with self.store.r.pipeline() as pipe:
            for n in ordered:
                pipe.exists(self.lease_key(n))
            flags = pipe.execute()
        return {n for n, held in zip(ordered, flags, strict=True) if held}

    def clear_failures(self) -> None:
        self.store.r.delete(self.k_failed)
