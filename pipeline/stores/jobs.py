"""Job and stage state: what a job looks like to its readers, and the `JobStore` protocol.

Small things only (ARCHITECTURE: state in Redis, payloads in the artifact store). The worker runs on
`RedisJobStore` (jobs_redis.py); `MemoryJobStore` (jobs_memory.py) is its twin for fast unit tests,
with the same semantics for all the protocol offers: expiry, fenced writes, leases with a TTL, events;
both keep a job as the same strings (job_hash.py). Writes a stage makes while it works are fenced by
its lease token, so a worker that lost its lease (paused, partitioned, presumed dead) cannot overwrite
the state of the worker that took over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.models import JSON, Issue, JobSpec, JobStatus, StageState, StageStatus
from pipeline.stores.batches import BatchState

Event = tuple[str, dict[str, str]]  # (stream id "<ms>-<seq>", fields)
# One Redis command (name, arguments) a store runs in the same transaction as a write of its own: how a new job's
# first broker message is sent exactly when the job is stored (worker/held_messages.py builds them).
RedisCommand = tuple[str, tuple[str | bytes | int | float, ...]]


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


class JobStore(Protocol):
    """What the API, the worker and the stages need of job state. Every key expires after `ttl_s`."""

    def create(self, spec: JobSpec, stages: tuple[str, ...], job_secrets: dict[str, str] | None = None,
               send: Sequence[RedisCommand] = ()) -> tuple[JobView, bool]:
        """Store a new job atomically. Returns (job, created); same id + same body → (existing, False).

        `send`: the first stage's broker message, as the Redis commands that send it; they run in the same
        transaction, only if the job is created, and the first stage is stored `queued`. Raises JobExists for the
        same id with a different body."""
        ...

    def exists(self, job_id: str) -> bool: ...

    def get(self, job_id: str) -> JobView:
        """The job; KeyError when it never existed or expired."""
        ...

    def list_jobs(self, status: JobStatus | None = None, limit: int = 100) -> list[JobView]:
        """Newest first; expired jobs are dropped from the index on the way."""
        ...

    def active_ids(self) -> list[str]:
        """Jobs the reconciler still drives, oldest activity first."""
        ...

    def secrets(self, job_id: str) -> dict[str, str]: ...

    def forget_secrets(self, job_id: str) -> None:
        """Drop the job's secrets (a completed job's: nothing runs it again), not waiting for its TTL."""
        ...

    def stage(self, job_id: str, name: str) -> StageState:
        """One stage's state; KeyError when the job or the stage is unknown."""
        ...

    def status(self, job_id: str) -> JobStatus | None: ...

    def project_seq(self, job_id: str) -> int | None:
        """This job's place in its project's submission order (1, 2, ...), None without a project."""
        ...

    def put_stage(self, job_id: str, state: StageState, token: str | None = None,
                  issues: Sequence[Issue] = ()) -> bool:
        """Write a stage's state, and append `issues` in the same step; with a token, only while that lease is
        still ours (False if not, and nothing written): a checkpoint and the issues of the work it covers
        land together or not at all, so neither a crash nor a run that lost its lease records one twice."""
        ...

    def note_item(self, job_id: str, stage: str, item: str) -> None:
        """Remember the input the stage works on now (what a dead-letter names if its process dies there)."""
        ...

    def noted_item(self, job_id: str, stage: str) -> str | None: ...

    def mark_run_ended(self, job_id: str, stage: str, run: str) -> None:
        """Run `run` of the stage ended in its task's hands, whatever its outcome (not by its process dying).
        Not fenced by the lease: a run that lost its lease is the one that most needs to say it was alive."""
        ...

    def run_ended(self, job_id: str, stage: str) -> str | None:
        """The run of the stage that last said it ended (mark_run_ended)."""
        ...

    def set_job(self, job_id: str, status: JobStatus | None = None, **fields: Any) -> None:
        """Set the status and job fields (floats, strings, JSON); an empty string clears a field.

        A status that is not terminal makes the job active again."""
        ...

    def deactivate(self, job_id: str) -> None:
        """The job needs no more driving: its notify stage is over (delivered, not needed, or dead)."""
        ...

    def add_issue(self, job_id: str, issue: Issue) -> None: ...

    def issues(self, job_id: str) -> list[JSON]: ...

    def issue_count(self, job_id: str) -> int: ...

    def event(self, job_id: str, kind: str, message: str, **extra: Any) -> None:
        """Append to the job's capped event stream: type, message, ts, and `extra` as strings."""
        ...

    def events(self, job_id: str, after: str = "-", count: int = 1000) -> list[Event]:
        """Events in order, all (`-`) or those after the id `after`."""
        ...

    def follow_events(self, job_id: str, after: str = "0-0", block_ms: int = 1000) -> Iterator[Event]:
        """Events after `after`, waiting up to block_ms for new ones; one call = one wait."""
        ...

    def acquire_lease(self, job_id: str, stage: str, ttl_s: float) -> str | None:
        """A fresh token if nobody holds the lease, else None. The lease lapses after ttl_s unless renewed."""
        ...

    def renew_lease(self, job_id: str, stage: str, token: str, ttl_s: float) -> bool:
        """Extend the lease to ttl_s from now, only if `token` still holds it."""
        ...

    def release_lease(self, job_id: str, stage: str, token: str) -> None:
        """Drop the lease, only if `token` still holds it."""
        ...

    def lease_held(self, job_id: str, stage: str) -> bool: ...

    def batches(self, job_id: str, stage: str) -> BatchState:
        """The state of `stage`'s fanned-out batches."""
        ...

    def ping(self) -> bool: ...


def pick_jobs(ids_newest_first: Iterable[str], get: Callable[[str], JobView], forget: Callable[[str], object],
              status: JobStatus | None, limit: int) -> list[JobView]:
    """`list_jobs` over a store's index: up to `limit` jobs with `status`; ids whose job expired are forgotten."""
    out: list[JobView] = []
    for job_id in ids_newest_first:
        try:
            job = get(job_id)
        except KeyError:
            forget(job_id)
            continue
        if status is None or job.status == status:
            out.append(job)
            if len(out) >= limit:
                break
    return out


