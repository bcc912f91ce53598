"""Job and stage state in Redis: spec, status, per-stage state and cursor, leases, issues, events.

Small things only (ARCHITECTURE: state in Redis, payloads in the artifact store). Every key is
under the configured prefix and expires after `state_ttl_s`. Writes a stage makes while it works
are fenced by its lease token, so a worker that lost its lease (paused, partitioned, presumed
dead) cannot overwrite the state of the worker that took over.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis

from pipeline.errors import PermanentError
from pipeline.models import JSON, Issue, JobSpec, JobStatus, StageState, StageStatus

# Write a job field only while holding the stage lease (KEYS: lease, job hash; ARGV: token, field, value, ttl).
_FENCED_HSET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


class JobExists(Exception):
    """Same job id, different request body."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} already exists with a different request")
        self.job_id = job_id


@dataclass
class JobView:
    """A job as readers see it: the spec, its status, its stages in plan order."""

    spec: JobSpec
    status: JobStatus
    stages: list[StageState]
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    error: JSON | None
    result: JSON | None
    callback: JSON | None

    def stage(self, name: str) -> StageState:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def next_stage(self) -> StageState | None:
        """First stage not done: where a (re)started chain begins."""
        for s in self.stages:
            if s.status != StageStatus.DONE:
                return s
        return None


class JobStore:
    def __init__(self, client: redis.Redis, prefix: str = "repobuild:", ttl_s: int = 7 * 24 * 3600,
                 events_max: int = 1000) -> None:
        self.r = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.events_max = events_max
        self._fenced_hset = self.r.register_script(_FENCED_HSET)
        self._renew = self.r.register_script(_RENEW)
        self._release = self.r.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> JobStore:
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5,
                                      health_check_interval=30)
        return cls(client, **kw)

    # keys ---------------------------------------------------------------
    def k_job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def k_secrets(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:secrets"

    def k_issues(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:issues"

    def k_events(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:events"

    def k_lease(self, job_id: str, stage: str) -> str:
        return f"{self.prefix}lease:{job_id}:{stage}"

    def k_project_seq(self, project_id: str) -> str:
        return f"{self.prefix}project:{project_id}:seq"

    def project_seq(self, job_id: str) -> int | None:
        """This job's place in its project's submission order (1, 2, ...), None without a project."""
        raw = self.r.hget(self.k_job(job_id), "project_seq")
        return int(cast(str, raw)) if raw else None

    @property
    def k_index(self) -> str:
        return f"{self.prefix}jobs"

    @property
    def k_active(self) -> str:
        return f"{self.prefix}jobs:active"

    def _job_keys(self, job_id: str) -> list[str]:
        return [self.k_job(job_id), self.k_secrets(job_id), self.k_issues(job_id), self.k_events(job_id)]

    # create / read ------------------------------------------------------
    def create(self, spec: JobSpec, stages: tuple[str, ...],
               job_secrets: dict[str, str] | None = None) -> tuple[JobView, bool]:
        """Store a new job atomically. Returns (job, created); same id + same body → (existing, False)."""
        key = self.k_job(spec.job_id)
        fingerprint = spec.fingerprint()
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    existing = pipe.hget(key, "fingerprint")
                    if existing is not None:
                        pipe.unwatch()
                        if existing != fingerprint:
                            raise JobExists(spec.job_id)
                        return self.get(spec.job_id), False
                    now = time.time()
                    fields: dict[str, str] = {
                        "spec": spec.model_dump_json(),
                        "fingerprint": fingerprint,
                        "status": JobStatus.QUEUED.value,
                        "created_at": repr(now),
                        "updated_at": repr(now),
                        "plan": json.dumps(list(stages)),
                    }
                    for name in stages:
                        fields[f"stage:{name}"] = json.dumps(StageState(name=name, enqueued_at=now).to_json())
                    pipe.multi()
                    if spec.project_id:
                        # Submission order within a project: a revision only replaces the project's
                        # latest one if it was submitted later (see stages/upload.py).
                        pipe.incr(self.k_project_seq(spec.project_id))
                    pipe.hset(key, mapping=cast(Any, fields))
                    if job_secrets:
                        pipe.hset(self.k_secrets(spec.job_id), mapping=cast(Any, job_secrets))
                    pipe.zadd(self.k_index, {spec.job_id: now})
                    pipe.zadd(self.k_active, {spec.job_id: now})
                    self._event(pipe, spec.job_id, "queued", f"job queued: {spec.task}")
                    for k in self._job_keys(spec.job_id):
                        pipe.expire(k, self.ttl_s)
                    replies = pipe.execute()
                    if spec.project_id:
                        self.r.hset(key, "project_seq", str(int(replies[0])))
                    return self.get(spec.job_id), True
                except redis.WatchError:
                    continue

    def exists(self, job_id: str) -> bool:
        return bool(self.r.exists(self.k_job(job_id)))

    def get(self, job_id: str) -> JobView:
        raw = cast(dict[str, str], self.r.hgetall(self.k_job(job_id)))
        if not raw or "spec" not in raw:
            raise KeyError(job_id)
        plan: list[str] = json.loads(raw["plan"])
        stages = [StageState.from_json(json.loads(raw[f"stage:{n}"])) for n in plan]

        def num(name: str) -> float | None:
            return float(raw[name]) if raw.get(name) else None

        def obj(name: str) -> JSON | None:
            return cast(JSON, json.loads(raw[name])) if raw.get(name) else None

        return JobView(
            spec=JobSpec.model_validate_json(raw["spec"]),
            status=JobStatus(raw["status"]),
            stages=stages,
            created_at=float(raw["created_at"]),
            updated_at=float(raw["updated_at"]),
            started_at=num("started_at"),
            finished_at=num("finished_at"),
            error=obj("error"),
            result=obj("result"),
            callback=obj("callback"),
        )

    def list_jobs(self, status: JobStatus | None = None, limit: int = 100) -> list[JobView]:
        out: list[JobView] = []
        ids = cast(list[str], self.r.zrevrange(self.k_index, 0, -1))
        for job_id in ids:
            try:
                job = self.get(job_id)
            except KeyError:
                self.r.zrem(self.k_index, job_id)  # expired job: drop it from the index
                continue
            if status is None or job.status == status:
                out.append(job)
                if len(out) >= limit:
                    break
        return out

    def active_ids(self) -> list[str]:
        return cast(list[str], self.r.zrange(self.k_active, 0, -1))

    def secrets(self, job_id: str) -> dict[str, str]:
        return cast(dict[str, str], self.r.hgetall(self.k_secrets(job_id)))

    def stage(self, job_id: str, name: str) -> StageState:
        raw = self.r.hget(self.k_job(job_id), f"stage:{name}")
        if raw is None:
            raise KeyError(f"{job_id}/{name}")
        return StageState.from_json(json.loads(cast(str, raw)))

    def status(self, job_id: str) -> JobStatus | None:
        raw = self.r.hget(self.k_job(job_id), "status")
        return JobStatus(cast(str, raw)) if raw else None

    # writes ---------------------------------------------------------------
    def _touch(self, pipe: Any, job_id: str) -> None:
        pipe.hset(self.k_job(job_id), "updated_at", repr(time.time()))
        for k in self._job_keys(job_id):
            pipe.expire(k, self.ttl_s)

    def put_stage(self, job_id: str, state: StageState, token: str | None = None) -> bool:
        """Write a stage's state; with a token, only while that lease is still ours."""
        value = json.dumps(state.to_json())
        if token is None:
            with self.r.pipeline() as pipe:
                pipe.hset(self.k_job(job_id), f"stage:{state.name}", value)
                self._touch(pipe, job_id)
                pipe.execute()
            return True
        ok = self._fenced_hset(keys=[self.k_lease(job_id, state.name), self.k_job(job_id)],
                               args=[token, f"stage:{state.name}", value, self.ttl_s])
        return bool(ok)

    def set_job(self, job_id: str, status: JobStatus | None = None, **fields: Any) -> None:
        mapping: dict[str, str] = {}
        if status is not None:
            mapping["status"] = status.value
        for name, value in fields.items():
            mapping[name] = value if isinstance(value, str) else json.dumps(value) if not isinstance(
                value, float) else repr(value)
        with self.r.pipeline() as pipe:
            pipe.hset(self.k_job(job_id), mapping=cast(Any, mapping))
            if status is not None and not status.terminal:
                pipe.zadd(self.k_active, {job_id: time.time()})
            self._touch(pipe, job_id)
            pipe.execute()

    def deactivate(self, job_id: str) -> None:
        """The job needs no more driving: its notify stage is over (delivered, not needed, or dead)."""
        self.r.zrem(self.k_active, job_id)

    def add_issue(self, job_id: str, issue: Issue) -> None:
        with self.r.pipeline() as pipe:
            pipe.rpush(self.k_issues(job_id), json.dumps(issue.to_json()))
            pipe.expire(self.k_issues(job_id), self.ttl_s)
            pipe.execute()

    def issues(self, job_id: str) -> list[JSON]:
        return [cast(JSON, json.loads(x)) for x in cast(list[str], self.r.lrange(self.k_issues(job_id), 0, -1))]

    def issue_count(self, job_id: str) -> int:
        return int(self.r.llen(self.k_issues(job_id)))

    def _event(self, pipe: Any, job_id: str, kind: str, message: str, **extra: Any) -> None:
        fields = {"type": kind, "message": message, "ts": repr(time.time())}
        fields.update({k: str(v) for k, v in extra.items()})
        pipe.xadd(self.k_events(job_id), fields, maxlen=self.events_max, approximate=True)
        pipe.expire(self.k_events(job_id), self.ttl_s)

    def event(self, job_id: str, kind: str, message: str, **extra: Any) -> None:
        with self.r.pipeline() as pipe:
            self._event(pipe, job_id, kind, message, **extra)
            pipe.execute()

    def events(self, job_id: str, after: str = "-", count: int = 1000) -> list[tuple[str, dict[str, str]]]:
        start = "-" if after == "-" else f"({after}"
        return cast(list[tuple[str, dict[str, str]]], self.r.xrange(self.k_events(job_id), start, "+", count=count))

    def follow_events(self, job_id: str, after: str = "0-0", block_ms: int = 1000) -> Iterator[
            tuple[str, dict[str, str]]]:
        """Events after `after`, waiting up to block_ms for new ones; one call = one wait."""
        res = self.r.xread({self.k_events(job_id): after}, block=block_ms, count=100)
        for _stream, entries in cast(list[tuple[str, list[tuple[str, dict[str, str]]]]], res or []):
            yield from entries

    # leases ---------------------------------------------------------------
    def acquire_lease(self, job_id: str, stage: str, ttl_s: float) -> str | None:
        token = secrets.token_hex(12)
        ok = self.r.set(self.k_lease(job_id, stage), token, nx=True, px=int(ttl_s * 1000))
        return token if ok else None

    def renew_lease(self, job_id: str, stage: str, token: str, ttl_s: float) -> bool:
        return bool(self._renew(keys=[self.k_lease(job_id, stage)], args=[token, int(ttl_s * 1000)]))

    def release_lease(self, job_id: str, stage: str, token: str) -> None:
        self._release(keys=[self.k_lease(job_id, stage)], args=[token])

    def lease_held(self, job_id: str, stage: str) -> bool:
        return bool(self.r.exists(self.k_lease(job_id, stage)))

    def ping(self) -> bool:
        return bool(self.r.ping())


def require_job(store: JobStore, job_id: str) -> JobView:
    try:
        return store.get(job_id)
    except KeyError:
        raise PermanentError(f"job {job_id} does not exist (or its state expired)") from None


__all__ = ["JobStore", "JobView", "JobExists", "require_job"]
