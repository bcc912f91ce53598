"""The in-memory twin of RedisJobStore, for fast unit tests of the worker and the stages.

It keeps the same keys (keys.py, in a Keyspace: keyspace.py), the same strings in them (job_hash.py) and the same rules:
every key has its own TTL, refreshed by the writes that refresh it in Redis; leases lapse after their
TTL and only their token renews, releases or writes through them; events get stream ids and a cap.
Time comes from `clock`, so a test can let a lease or a job expire without sleeping. Durability tests
never use it: they need the real Redis and real processes.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, cast

from pipeline.models import JSON, Issue, JobSpec, JobStatus, StageState
from pipeline.stores import job_hash
from pipeline.stores.jobs import Event, JobExists, JobView, RedisCommand, pick_jobs
from pipeline.stores.keys import RedisKeys, lease_holder
from pipeline.stores.keyspace import Clock, Keyspace
from pipeline.stores.messages import PATH_MAX_CHARS, capped


def _stream_id(raw: str) -> tuple[int, int]:
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq or 0)


class MemoryJobStore:
    def __init__(self, prefix: str = "repobuild:", ttl_s: int = 7 * 24 * 3600, events_max: int = 1000,
                 clock: Clock = time.monotonic) -> None:
        self.keys = RedisKeys(prefix)
        self.ttl_s = ttl_s
        self.events_max = events_max
        self.space = Keyspace(clock)
        # One lock for all of it, as Redis runs one command (or one MULTI) at a time.
        self._lock = threading.RLock()
        self._appended = threading.Condition(self._lock)
        self._last_event_id = (0, 0)

    # create / read ------------------------------------------------------
    def create(self, spec: JobSpec, stages: tuple[str, ...], job_secrets: dict[str, str] | None = None,
               send: Sequence[RedisCommand] = ()) -> tuple[JobView, bool]:
        if send:
            # its apps send with kombu's in-memory transport, which has no Redis keys to write these to
            raise ValueError(f"job {spec.job_id}: the in-memory store cannot send broker commands with a job")
        with self._lock:
            job_id = spec.job_id
            existing = self.space.peek_hash(self.keys.job(job_id)).get("fingerprint")
            if existing is not None:
                if existing != spec.fingerprint():
                    raise JobExists(job_id)
                return self.get(job_id), False
            now = time.time()
            fields, job = job_hash.new_job(spec, stages, now)
            if spec.project_id:
                seq_key = self.keys.project_seq(spec.project_id)
                seq = int(self.space.get(seq_key) or 0) + 1
                self.space.put(seq_key, str(seq))  # as in Redis, the counter has no TTL
                fields["project_seq"] = str(seq)
            self.space.hash(self.keys.job(job_id)).update(fields)
            if job_secrets:
                self.space.hash(self.keys.secrets(job_id)).update(job_secrets)
            self.space.members(self.keys.index)[job_id] = now
            self.space.members(self.keys.active)[job_id] = now
            self._append_event(job_id, "queued", f"job queued: {spec.task}", {})
            for k in self.keys.job_keys(job_id):
                self.space.expire(k, self.ttl_s)
            return job, True

    def exists(self, job_id: str) -> bool:
        with self._lock:
            return self.space.get(self.keys.job(job_id)) is not None

    def get(self, job_id: str) -> JobView:
        with self._lock:
            return job_hash.view(job_id, self.space.peek_hash(self.keys.job(job_id)))

    def list_jobs(self, status: JobStatus | None = None, limit: int = 100) -> list[JobView]:
        with self._lock:
            index = self.space.members(self.keys.index)
            ids = sorted(index, key=lambda m: (index[m], m), reverse=True)  # ZREVRANGE's order
            return pick_jobs(ids, self.get, index.__delitem__, status, limit)

    def active_ids(self) -> list[str]:
        with self._lock:
            active = self.space.members(self.keys.active)
            return sorted(active, key=lambda m: (active[m], m))

    def secrets(self, job_id: str) -> dict[str, str]:
        with self._lock:
            return self.space.peek_hash(self.keys.secrets(job_id))

    def forget_secrets(self, job_id: str) -> None:
        with self._lock:
            self.space.delete(self.keys.secrets(job_id))

    def stage(self, job_id: str, name: str) -> StageState:
        with self._lock:
            raw = self.space.peek_hash(self.keys.job(job_id)).get(f"stage:{name}")
        if raw is None:
            raise KeyError(f"{job_id}/{name}")
        return job_hash.decode_stage(raw)

    def status(self, job_id: str) -> JobStatus | None:
        with self._lock:
            raw = self.space.peek_hash(self.keys.job(job_id)).get("status")
        return JobStatus(raw) if raw else None

    def project_seq(self, job_id: str) -> int | None:
        with self._lock:
            raw = self.space.peek_hash(self.keys.job(job_id)).get("project_seq")
        return int(raw) if raw else None

    # writes ---------------------------------------------------------------
    def _touch(self, job_id: str) -> None:
        self.space.hash(self.keys.job(job_id))["updated_at"] = repr(time.time())
        for k in self.keys.job_keys(job_id):
            self.space.expire(k, self.ttl_s)

    def put_stage(self, job_id: str, state: StageState, token: str | None = None,
                  issues: Sequence[Issue] = ()) -> bool:
        value = job_hash.encode_stage(state)
        with self._lock:
            if token is not None and self.space.get(self.keys.lease(job_id, state.name)) != token:
                return False
            self.space.hash(self.keys.job(job_id))[f"stage:{state.name}"] = value
            if issues:
                self.space.items(self.keys.issues(job_id)).extend(job_hash.encode_issue(i) for i in issues)
                self.space.expire(self.keys.issues(job_id), self.ttl_s)
            if token is None:
                self._touch(job_id)
            else:
                self.space.expire(self.keys.job(job_id), self.ttl_s)
            return True

    def note_item(self, job_id: str, stage: str, item: str) -> None:
        with self._lock:
            self.space.hash(self.keys.job(job_id))[f"item:{stage}"] = capped(item, PATH_MAX_CHARS)

    def noted_item(self, job_id: str, stage: str) -> str | None:
        with self._lock:
            return self.space.peek_hash(self.keys.job(job_id)).get(f"item:{stage}")

    def mark_run_ended(self, job_id: str, stage: str, run: str) -> None:
        with self._lock:
            self.space.hash(self.keys.job(job_id))[f"ended:{stage}"] = run

    def run_ended(self, job_id: str, stage: str) -> str | None:
        with self._lock:
            return self.space.peek_hash(self.keys.job(job_id)).get(f"ended:{stage}")

    def set_job(self, job_id: str, status: JobStatus | None = None, **fields: Any) -> None:
        with self._lock:
            self.space.hash(self.keys.job(job_id)).update(job_hash.field_values(status, fields))
            if status is not None and not status.terminal:
                self.space.members(self.keys.active)[job_id] = time.time()
            self._touch(job_id)

    def deactivate(self, job_id: str) -> None:
        with self._lock:
            active = self.space.get(self.keys.active)
            if active is not None:
                active.pop(job_id, None)

    def add_issue(self, job_id: str, issue: Issue) -> None:
        with self._lock:
            seen = self.space.items(self.keys.issues_seen(job_id))
            encoded = job_hash.encode_issue(issue)
            if encoded not in seen:  # the same issue of the same file is listed once, as in Redis
                seen.append(encoded)
                self.space.items(self.keys.issues(job_id)).append(encoded)
            self.space.expire(self.keys.issues_seen(job_id), self.ttl_s)
            self.space.expire(self.keys.issues(job_id), self.ttl_s)

    def issues(self, job_id: str) -> list[JSON]:
        with self._lock:
            raw = list(self.space.get(self.keys.issues(job_id)) or [])
        return [job_hash.decode_issue(x) for x in raw]

    def issue_count(self, job_id: str) -> int:
        with self._lock:
            return len(self.space.get(self.keys.issues(job_id)) or [])

    # events -----------------------------------------------------------------
    def _append_event(self, job_id: str, kind: str, message: str, extra: dict[str, Any]) -> None:
        # Stream ids as XADD makes them: the time in ms, and a sequence within the same ms.
        ms = max(int(time.time() * 1000), self._last_event_id[0])
        self._last_event_id = (ms, self._last_event_id[1] + 1 if ms == self._last_event_id[0] else 0)
        stream = self.space.items(self.keys.events(job_id))
        stream.append((self._last_event_id, job_hash.event_fields(kind, message, extra)))
        del stream[:-self.events_max]
        self.space.expire(self.keys.events(job_id), self.ttl_s)
        self._appended.notify_all()

    def event(self, job_id: str, kind: str, message: str, **extra: Any) -> None:
        with self._lock:
            self._append_event(job_id, kind, message, extra)

    def _after(self, job_id: str, after: tuple[int, int], count: int) -> list[Event]:
        stream = cast(list[tuple[tuple[int, int], dict[str, str]]], self.space.get(self.keys.events(job_id)) or [])
        return [(f"{i[0]}-{i[1]}", dict(f)) for i, f in stream if i > after][:count]

    def events(self, job_id: str, after: str = "-", count: int = 1000) -> list[Event]:
        with self._lock:
            return self._after(job_id, (-1, -1) if after == "-" else _stream_id(after), count)

    def follow_events(self, job_id: str, after: str = "0-0", block_ms: int = 1000) -> Iterator[Event]:
        with self._lock:
            start = self._last_event_id if after == "$" else _stream_id(after)
            deadline = time.monotonic() + block_ms / 1000
            found = self._after(job_id, start, 100)
            while not found and (block_ms == 0 or time.monotonic() < deadline):  # BLOCK 0 waits for ever
                self._appended.wait(None if block_ms == 0 else max(0.0, deadline - time.monotonic()))
                found = self._after(job_id, start, 100)
        yield from found

    # leases ---------------------------------------------------------------
    def acquire_lease(self, job_id: str, stage: str, ttl_s: float) -> str | None:
        with self._lock:
            key = self.keys.lease(job_id, stage)
            if self.space.get(key) is not None:
                return None
            token = secrets.token_hex(12)
            self.space.put(key, token, int(ttl_s * 1000) / 1000)
            return token

    def renew_lease(self, job_id: str, stage: str, token: str, ttl_s: float) -> bool:
        with self._lock:
            key = self.keys.lease(job_id, stage)
            if self.space.get(key) != token:
                return False
            self.space.put(key, token, int(ttl_s * 1000) / 1000)
            return True

    def release_lease(self, job_id: str, stage: str, token: str) -> None:
        with self._lock:
            key = self.keys.lease(job_id, stage)
            if self.space.get(key) == token:
                self.space.delete(key)

    def lease_held(self, job_id: str, stage: str) -> bool:
        with self._lock:
            return self.space.get(self.keys.lease(job_id, stage)) is not None

    def batches(self, job_id: str, stage: str) -> MemoryBatchState:
        return MemoryBatchState(self, job_id, stage)

    def ping(self) -> bool:
        return True


class MemoryBatchState:
    """RedisBatchState's twin, on its store's keyspace under the same keys."""

    def __init__(self, store: MemoryJobStore, job_id: str, stage: str) -> None:
        self.store, self.job_id, self.stage = store, job_id, stage
        self.k = store.keys.batches(job_id, stage)

    def _expire(self) -> None:
        for k in self.k.all():
            self.store.space.expire(k, self.store.ttl_s)

    def _hash(self, key: str) -> dict[str, str]:
        with self.store._lock:
            return self.store.space.peek_hash(key)

    def mark_sent(self, batches: list[int]) -> float:
        now = time.time()
        if not batches:
            return now
        with self.store._lock:
            self.store.space.hash(self.k.sent).update({str(n): repr(now) for n in batches})
            self._expire()
        return now

    def mark_started(self, n: int) -> None:
        with self.store._lock:
            runs = self.store.space.hash(self.k.runs)
            runs[str(n)] = str(int(runs.get(str(n), "0")) + 1)
            self._expire()

    def runs(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self._hash(self.k.runs).items()}

    def add_seconds(self, n: int, seconds: float) -> None:
        with self.store._lock:
            spent = self.store.space.hash(self.k.seconds)
            spent[str(n)] = repr(float(spent.get(str(n), "0")) + seconds)
            self._expire()

    def seconds(self) -> float:
        return sum(float(v) for v in self._hash(self.k.seconds).values())

    def mark_ended(self, n: int) -> None:
        with self.store._lock:
            ended = self.store.space.hash(self.k.ended)
            ended[str(n)] = str(int(ended.get(str(n), "0")) + 1)
            self._expire()

    def lost_runs(self, n: int) -> int:
        return int(self._hash(self.k.runs).get(str(n), "0")) - int(self._hash(self.k.ended).get(str(n), "0"))

    def note_item(self, n: int, item: str) -> None:
        with self.store._lock:
            self.store.space.hash(self.k.items)[str(n)] = capped(item, PATH_MAX_CHARS)
            self.store.space.expire(self.k.items, self.store.ttl_s)

    def noted_item(self, n: int) -> str | None:
        return self._hash(self.k.items).get(str(n))

    def mark_done(self, n: int) -> None:
        with self.store._lock:
            # The done set kept as a hash of members, so one container type serves every batch key.
            self.store.space.hash(self.k.done)[str(n)] = ""
            failed = self.store.space.get(self.k.failed)
            if failed is not None:
                failed.pop(str(n), None)
            self._expire()

    def mark_failed(self, n: int, error: str) -> None:
        with self.store._lock:
            self.store.space.hash(self.k.failed)[str(n)] = capped(error)
            self._expire()

    def done(self) -> set[int]:
        return {int(x) for x in self._hash(self.k.done)}

    def is_done(self, n: int) -> bool:
        return str(n) in self._hash(self.k.done)

    def failed(self) -> dict[int, str]:
        return {int(k): v for k, v in self._hash(self.k.failed).items()}

    def forget_failed(self) -> list[int]:
        with self.store._lock:
            failed = self.store.space.get(self.k.failed) or {}
            numbers = sorted(int(k) for k in failed)
            failed.clear()
        return numbers

    def sent_at(self) -> dict[int, float]:
        return {int(k): float(v) for k, v in self._hash(self.k.sent).items()}

    def leased(self, batches: set[int]) -> set[int]:
        return {n for n in batches if self.store.lease_held(self.job_id, lease_holder(self.stage, n))}

