"""The JobStore the worker runs on: one hash per job in Redis, fenced by lease tokens in Lua."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Sequence
from typing import Any, cast

import redis

from pipeline.models import JSON, Issue, JobSpec, JobStatus, StageState
from pipeline.stores import job_hash
from pipeline.stores.batches import RedisBatchState
from pipeline.stores.jobs import Event, JobExists, JobView, RedisCommand, pick_jobs
from pipeline.stores.keys import RedisKeys
from pipeline.stores.messages import PATH_MAX_CHARS, capped
from pipeline.stores.redis_connect import redis_client

# Write a job field, and append issues, only while holding the stage lease
# (KEYS: lease, job hash, issues list; ARGV: token, field, value, ttl, issue...).
_FENCED_HSET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
if #ARGV > 4 then
  for i = 5, #ARGV do redis.call('RPUSH', KEYS[3], ARGV[i]) end
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
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


# A retried stage, a redelivered batch or one URL used in many places records the same issue again: list it once.
_ADD_ISSUE = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then redis.call('RPUSH', KEYS[1], ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


# Store a new job unless its id is taken, in one step (one round trip: a submission's latency is its round trips).
# KEYS: job hash, secrets, index, active, events, the project's counter ('' for none), then every key the job owns
# (RedisKeys.job_keys), which all get the TTL.
# ARGV: job id, fingerprint, now, ttl, events max; then three counted runs (count, items...): the job's fields, its
# secrets, the "queued" event's fields; then the commands sent with it (name, count, args...).
# Returns the fingerprint of the job already there, or nil when this one was stored.
_CREATE = """
local existing = redis.call('HGET', KEYS[1], 'fingerprint')
if existing then return existing end
local i = 6
local function take()
  local n, run = tonumber(ARGV[i]), {}
  for j = 1, n do run[j] = ARGV[i + j] end
  i = i + n + 1
  return run
end
local fields, job_secrets, event = take(), take(), take()
if KEYS[6] ~= '' then
  -- submission order within a project: a revision replaces the project's latest only if submitted later
  table.insert(fields, 'project_seq')
  table.insert(fields, tostring(redis.call('INCR', KEYS[6])))
end
redis.call('HSET', KEYS[1], unpack(fields))
if #job_secrets > 0 then redis.call('HSET', KEYS[2], unpack(job_secrets)) end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', unpack(event))
for k = 7, #KEYS do redis.call('EXPIRE', KEYS[k], ARGV[4]) end
while i <= #ARGV do
  local name, n = ARGV[i], tonumber(ARGV[i + 1])
  redis.call(name, unpack(ARGV, i + 2, i + 1 + n))
  i = i + n + 2
end
return false
"""
# what a new job's message is sent with: kombu's Redis transport pushes a task onto its queue's list and publishes
# an event (task-sent) on a channel, and expires a queue declared with a TTL
SENDABLE = frozenset({"lpush", "publish", "pexpire"})


class RedisJobStore:
    def __init__(self, client: redis.Redis, prefix: str = "repobuild:", ttl_s: int = 7 * 24 * 3600,
                 events_max: int = 1000) -> None:
        self.r = client
        self.keys = RedisKeys(prefix)
        self.ttl_s = ttl_s
        self.events_max = events_max
        self._fenced_hset = self.r.register_script(_FENCED_HSET)
        self._renew = self.r.register_script(_RENEW)
        self._release = self.r.register_script(_RELEASE)
        self._add_issue = self.r.register_script(_ADD_ISSUE)
        self._create = self.r.register_script(_CREATE)

    @classmethod
    def from_url(cls, url: str, sentinel_master: str = "mymaster", **kw: Any) -> RedisJobStore:
        client = redis_client(url, sentinel_master, decode_responses=True, socket_timeout=10, socket_connect_timeout=5,
                              health_check_interval=30)
        return cls(client, **kw)

    # create / read ------------------------------------------------------
    def create(self, spec: JobSpec, stages: tuple[str, ...], job_secrets: dict[str, str] | None = None,
               send: Sequence[RedisCommand] = ()) -> tuple[JobView, bool]:
        for name, _args in send:
            if name not in SENDABLE:
                raise ValueError(f"job {spec.job_id}: {name!r} cannot be sent with a new job (only {sorted(SENDABLE)})")
        now = time.time()
        fields, job = job_hash.new_job(spec, stages, now, first_queued=bool(send))
        keys = self.keys
        argv: list[Any] = [spec.job_id, fields["fingerprint"], repr(now), self.ttl_s, self.events_max]
        for mapping in (fields, job_secrets or {}, job_hash.event_fields("queued", f"job queued: {spec.task}", {})):
            argv += [2 * len(mapping), *(x for kv in mapping.items() for x in kv)]
        for name, args in send:
            argv += [name, len(args), *args]
        existing = self._create(keys=[keys.job(spec.job_id), keys.secrets(spec.job_id), keys.index, keys.active,
                                      keys.events(spec.job_id),
                                      keys.project_seq(spec.project_id) if spec.project_id else "",
                                      *keys.job_keys(spec.job_id)],
                                args=argv)
        if existing is None:
            return job, True
        if existing != fields["fingerprint"]:
            raise JobExists(spec.job_id)
        return self.get(spec.job_id), False

    def exists(self, job_id: str) -> bool:
        return bool(self.r.exists(self.keys.job(job_id)))

    def get(self, job_id: str) -> JobView:
        return job_hash.view(job_id, cast(dict[str, str], self.r.hgetall(self.keys.job(job_id))))

    def list_jobs(self, status: JobStatus | None = None, limit: int = 100) -> list[JobView]:
        ids = cast(list[str], self.r.zrevrange(self.keys.index, 0, -1))
        return pick_jobs(ids, self.get, lambda job_id: self.r.zrem(self.keys.index, job_id), status, limit)

    def active_ids(self) -> list[str]:
        return cast(list[str], self.r.zrange(self.keys.active, 0, -1))

    def secrets(self, job_id: str) -> dict[str, str]:
        return cast(dict[str, str], self.r.hgetall(self.keys.secrets(job_id)))

    def forget_secrets(self, job_id: str) -> None:
        self.r.delete(self.keys.secrets(job_id))

    def stage(self, job_id: str, name: str) -> StageState:
        raw = self.r.hget(self.keys.job(job_id), f"stage:{name}")
        if raw is None:
            raise KeyError(f"{job_id}/{name}")
        return job_hash.decode_stage(cast(str, raw))

    def status(self, job_id: str) -> JobStatus | None:
        raw = self.r.hget(self.keys.job(job_id), "status")
        return JobStatus(cast(str, raw)) if raw else None

    def project_seq(self, job_id: str) -> int | None:
        raw = self.r.hget(self.keys.job(job_id), "project_seq")
        return int(cast(str, raw)) if raw else None

    # writes ---------------------------------------------------------------
    def _touch(self, pipe: Any, job_id: str) -> None:
        pipe.hset(self.keys.job(job_id), "updated_at", repr(time.time()))
        for k in self.keys.job_keys(job_id):
            pipe.expire(k, self.ttl_s)

    def put_stage(self, job_id: str, state: StageState, token: str | None = None,
                  issues: Sequence[Issue] = ()) -> bool:
        value = job_hash.encode_stage(state)
        encoded = [job_hash.encode_issue(i) for i in issues]
        if token is None:
            with self.r.pipeline() as pipe:
                pipe.hset(self.keys.job(job_id), f"stage:{state.name}", value)
                if encoded:
                    pipe.rpush(self.keys.issues(job_id), *encoded)
                self._touch(pipe, job_id)
                pipe.execute()
            return True
        ok = self._fenced_hset(keys=[self.keys.lease(job_id, state.name), self.keys.job(job_id),
                                     self.keys.issues(job_id)],
                               args=[token, f"stage:{state.name}", value, self.ttl_s, *encoded])
        return bool(ok)

    def note_item(self, job_id: str, stage: str, item: str) -> None:
        self.r.hset(self.keys.job(job_id), f"item:{stage}", capped(item, PATH_MAX_CHARS))

    def noted_item(self, job_id: str, stage: str) -> str | None:
        return cast(str | None, self.r.hget(self.keys.job(job_id), f"item:{stage}"))

    def mark_run_ended(self, job_id: str, stage: str, run: str) -> None:
        self.r.hset(self.keys.job(job_id), f"ended:{stage}", run)

    def run_ended(self, job_id: str, stage: str) -> str | None:
        return cast(str | None, self.r.hget(self.keys.job(job_id), f"ended:{stage}"))

    def set_job(self, job_id: str, status: JobStatus | None = None, **fields: Any) -> None:
        with self.r.pipeline() as pipe:
            pipe.hset(self.keys.job(job_id), mapping=cast(Any, job_hash.field_values(status, fields)))
            if status is not None and not status.terminal:
                pipe.zadd(self.keys.active, {job_id: time.time()})
            self._touch(pipe, job_id)
            pipe.execute()

    def deactivate(self, job_id: str) -> None:
        self.r.zrem(self.keys.active, job_id)

    def add_issue(self, job_id: str, issue: Issue) -> None:
        self._add_issue(keys=[self.keys.issues(job_id), self.keys.issues_seen(job_id)],
                        args=[job_hash.encode_issue(issue), int(self.ttl_s)])

    def issues(self, job_id: str) -> list[JSON]:
        return [job_hash.decode_issue(x) for x in cast(list[str], self.r.lrange(self.keys.issues(job_id), 0, -1))]

    def issue_count(self, job_id: str) -> int:
        return int(self.r.llen(self.keys.issues(job_id)))

    def _event(self, pipe: Any, job_id: str, kind: str, message: str, **extra: Any) -> None:
        pipe.xadd(self.keys.events(job_id), job_hash.event_fields(kind, message, extra), maxlen=self.events_max,
                  approximate=True)
        pipe.expire(self.keys.events(job_id), self.ttl_s)

    def event(self, job_id: str, kind: str, message: str, **extra: Any) -> None:
        with self.r.pipeline() as pipe:
            self._event(pipe, job_id, kind, message, **extra)
            pipe.execute()

    def events(self, job_id: str, after: str = "-", count: int = 1000) -> list[Event]:
        start = "-" if after == "-" else f"({after}"
        return cast(list[Event], self.r.xrange(self.keys.events(job_id), start, "+", count=count))

    def follow_events(self, job_id: str, after: str = "0-0", block_ms: int = 1000) -> Iterator[Event]:
        res = self.r.xread({self.keys.events(job_id): after}, block=block_ms, count=100)
        for _stream, entries in cast(list[tuple[str, list[Event]]], res or []):
            yield from entries

    # leases ---------------------------------------------------------------
    def acquire_lease(self, job_id: str, stage: str, ttl_s: float) -> str | None:
        token = secrets.token_hex(12)
        ok = self.r.set(self.keys.lease(job_id, stage), token, nx=True, px=int(ttl_s * 1000))
        return token if ok else None

    def renew_lease(self, job_id: str, stage: str, token: str, ttl_s: float) -> bool:
        return bool(self._renew(keys=[self.keys.lease(job_id, stage)], args=[token, int(ttl_s * 1000)]))

    def release_lease(self, job_id: str, stage: str, token: str) -> None:
        self._release(keys=[self.keys.lease(job_id, stage)], args=[token])

    def lease_held(self, job_id: str, stage: str) -> bool:
        return bool(self.r.exists(self.keys.lease(job_id, stage)))

    def batches(self, job_id: str, stage: str) -> RedisBatchState:
        return RedisBatchState(self.r, self.keys, self.ttl_s, job_id, stage)

    def ping(self) -> bool:
        return bool(self.r.ping())
