"""Every Redis key repobuild writes, spelled once.

The strings are a storage format: jobs already in Redis resolve only while these stay byte for byte
what they were, so change one only together with a migration. Celery's and kombu's own keys (queues,
the unacked hash) are theirs and are not listed here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisKeys:
    """The keys under one prefix (`REPOBUILD_KEY_PREFIX`, default `repobuild:`)."""

    prefix: str = "repobuild:"

    def job(self, job_id: str) -> str:
        """Hash: spec, status, timestamps, `stage:<name>` states, plan, result, error, callback."""
        return f"{self.prefix}job:{job_id}"

    def secrets(self, job_id: str) -> str:
        """Hash: the job's secrets (the git token, request values that held credentials), kept out of the job hash."""
        return f"{self.job(job_id)}:secrets"

    def issues(self, job_id: str) -> str:
        """List: the job's skipped items, as JSON."""
        return f"{self.job(job_id)}:issues"

    def issues_seen(self, job_id: str) -> str:
        """Set: the issues already in the list, so the same issue of the same file is listed once."""
        return f"{self.job(job_id)}:issues-seen"

    def events(self, job_id: str) -> str:
        """Stream: the job's events, capped."""
        return f"{self.job(job_id)}:events"

    def job_keys(self, job_id: str) -> list[str]:
        """The keys one job owns outright (its batch keys expire on their own)."""
        return [self.job(job_id), self.secrets(job_id), self.issues(job_id), self.issues_seen(job_id),
                self.events(job_id)]

    def lease(self, job_id: str, holder: str) -> str:
        """String: the token of whoever runs `holder` (a stage, or `<stage>#<n>` for one batch)."""
        return f"{self.prefix}lease:{job_id}:{holder}"

    def project_seq(self, project_id: str) -> str:
        """Counter: submissions to a project so far, which orders its revisions."""
        return f"{self.prefix}project:{project_id}:seq"

    @property
    def index(self) -> str:
        """Sorted set: every job id by creation time."""
        return f"{self.prefix}jobs"

    @property
    def active(self) -> str:
        """Sorted set: jobs the reconciler still drives."""
        return f"{self.prefix}jobs:active"

    def batches(self, job_id: str, stage: str) -> BatchKeys:
        return BatchKeys(f"{self.job(job_id)}:batches:{stage}")

    @property
    def reconciler_lock(self) -> str:
        """String: held by the one worker whose reconciler acts this round."""
        return f"{self.prefix}reconciler"

    @property
    def workers(self) -> str:
        """Hash: worker id → when it last said what it holds (so a reader finds every `worker_holds` key)."""
        return f"{self.prefix}workers"

    def worker_holds(self, worker_id: str) -> str:
        """String with a short TTL: the JSON list of broker delivery tags a live worker holds unacked."""
        return f"{self.prefix}worker:{worker_id}:holds"


@dataclass(frozen=True)
class BatchKeys:
    """The keys of one stage's fanned-out batches."""

    base: str

    @property
    def done(self) -> str:
        """Set: numbers of finished batches (the join)."""
        return f"{self.base}:done"

    @property
    def failed(self) -> str:
        """Hash: batch number → the error it failed with for good."""
        return f"{self.base}:failed"

    @property
    def sent(self) -> str:
        """Hash: batch number → when it was last sent."""
        return f"{self.base}:sent"

    @property
    def runs(self) -> str:
        """Hash: batch number → how often it was started (proof that finished batches are not redone)."""
        return f"{self.base}:runs"

    @property
    def seconds(self) -> str:
        """Hash: batch number → seconds its tasks ran, over every run (the stage's task time counts them)."""
        return f"{self.base}:seconds"

    @property
    def ended(self) -> str:
        """Hash: batch number → how many of its runs ended in the task's own hands (done, failed or retried);
        runs minus ended is how often its process died under it."""
        return f"{self.base}:ended"

    @property
    def items(self) -> str:
        """Hash: batch number → the input its latest run named (`BatchContext.working_on`), for the dead-letter."""
        return f"{self.base}:items"

    def all(self) -> tuple[str, ...]:
        return (self.done, self.failed, self.sent, self.runs, self.seconds, self.ended, self.items)


def lease_holder(stage: str, batch: int | None = None) -> str:
    """What a lease is named for: the stage itself, or one of its batches."""
    return stage if batch is None else f"{stage}#{batch}"
