"""The StageContext a Celery task gives a stage: Redis-backed cursor, lease, budget, cancellation."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pipeline.catalog import job_key
from pipeline.errors import JobCancelled, LeaseLost, PermanentError
from pipeline.faults import kill_if_poisoned
from pipeline.models import JSON, Issue, JobSpec, JobStatus, StageState
from pipeline.settings import Settings
from pipeline.stores.artifacts import ArtifactStore
from pipeline.stores.batches import BatchState
from pipeline.stores.jobs import JobStore, JobView

log = logging.getLogger("repobuild.worker")


def run_id(token: str) -> str:
    """What events call one run of a stage: a prefix of its lease token, enough to tell runs apart (every
    run takes a fresh token) without printing the token that fences its writes."""
    return token[:8]


class LeaseKeeper:
    """Renews a stage lease in the background; flags the loss if renewal ever fails."""

    def __init__(self, store: JobStore, job_id: str, stage: str, token: str, ttl_s: float) -> None:
        self.store, self.job_id, self.stage, self.token, self.ttl_s = store, job_id, stage, token, ttl_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{job_id}-{stage}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.store.release_lease(self.job_id, self.stage, self.token)

    def _loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.store.renew_lease(self.job_id, self.stage, self.token, self.ttl_s):
                    log.warning("lease lost", extra={"job_id": self.job_id, "stage": self.stage})
                    self.lost.set()
                    return
            except Exception as exc:  # a Redis blip: keep trying until the lease would have expired
                log.warning("lease renewal failed: %s", exc)


@dataclass
class RedisJobContext:
    """What every task of a job sees: its spec, settings, artifacts, issues, logs and secrets."""

    job_id: str
    stage: str
    spec: JobSpec
    settings: Settings
    artifacts: ArtifactStore
    store: JobStore
    job_secrets: dict[str, str]

    def key(self, name: str) -> str:
        return job_key(self.job_id, self.stage, name)

    def record_issue(self, issue: Issue) -> None:
        self.store.add_issue(self.job_id, issue)

    def log(self, message: str, level: str = "info") -> None:
        log.log(logging.ERROR if level == "error" else logging.INFO, "%s", message,
                extra={"job_id": self.job_id, "stage": self.stage})
        self.store.event(self.job_id, "log", message, stage=self.stage, level=level)

    def secret(self, name: str) -> str | None:
        # The service's GITHUB_TOKEN is no job's secret: pipeline/http/token_scope.py sends it to GitHub only.
        return self.job_secrets.get(name)


class InputNames:
    """Names the input a run takes up, for the dead-letter of a run that dies there over and over.

    One Redis write per item would be a round trip per post: a healthy run names only the first input after each
    checkpoint (a bounded number of commands per batch); a run after a death (`careful`) names each, so that if it
    dies there again the dead-letter names that very input."""

    def __init__(self, note: Callable[[str], None], careful: bool) -> None:
        self.note, self.careful = note, careful
        self.noted = False

    def name(self, settings: Settings, item: str) -> None:
        if self.careful:
            self.note(item)
        elif not self.noted:
            self.note(f"{item} or an input after it")
            self.noted = True
        kill_if_poisoned(settings, item)

    def checkpoint(self) -> None:
        self.noted = False


@dataclass
class RedisBatchContext(RedisJobContext):
    """A batch task's context: a job context that also names the input its batch takes up."""

    batch: int = 0
    batches: BatchState | None = None
    # The batch's run before this one died without a word: name every input, as a stage run does after a death.
    careful: bool = False

    def __post_init__(self) -> None:
        batches = self.batches
        assert batches is not None
        # A batch is one checkpoint: a healthy run writes one name.
        self._names = InputNames(lambda item: batches.note_item(self.batch, item), self.careful)

    def working_on(self, item: str) -> None:
        self._names.name(self.settings, item)


LOST_BATCH_GRACE_S = 10.0  # a batch sent this recently may still be on its way to a worker


@dataclass
class RedisStageContext(RedisJobContext):
    """A stage task's context: a fenced cursor, a time budget, cancellation and fan-out."""

    state: StageState = field(default_factory=lambda: StageState(name=""))
    lease: LeaseKeeper | None = None
    # send batch n, sent at this time (the batch store's mark: a failure of an older copy is stale)
    send_batch: Callable[[int, float], None] | None = None
    batches_in_broker: Callable[[], set[int]] | None = None
    _started: float = field(default_factory=time.monotonic)
    _last_cancel_check: float = 0.0
    _last_lost_check: float = 0.0
    _issues: list[Issue] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The run before this one died without a word (state.lost_runs counts it): this run names every input.
        self._names = InputNames(lambda item: self.store.note_item(self.job_id, self.stage, item),
                                 careful=self.state.lost_runs > 0)

    @property
    def cursor(self) -> JSON | None:
        return self.state.cursor

    def _write(self, issues: Sequence[Issue] = ()) -> None:
        assert self.lease is not None
        if self.lease.lost.is_set() or not self.store.put_stage(self.job_id, self.state, self.lease.token,
                                                                issues=issues):
            raise LeaseLost(f"{self.job_id}/{self.stage}: lease lost; another worker owns this stage now")

    def record_issue(self, issue: Issue) -> None:
        # Held until the next checkpoint, which writes them with the cursor in one fenced step: the work
        # they belong to is redone after a crash or by the next owner of the lease, and records them again.
        self._issues.append(issue)

    def take_issues(self) -> list[Issue]:
        """The issues recorded since the last checkpoint, for the write that commits their work."""
        issues, self._issues = self._issues, []
        return issues

    def save_cursor(self, cursor: JSON) -> None:
        self.state.cursor = cursor
        self.state.lost_runs = 0  # the stage moved on: deaths before this point were not its input's doing
        self._write(self.take_issues())
        self._names.checkpoint()

    def working_on(self, item: str) -> None:
        self._names.name(self.settings, item)

    def progress(self, done: int, total: int) -> None:
        if (self.state.done, self.state.total) == (done, total):
            return
        self.state.done, self.state.total = done, total
        self._write()
        self.store.event(self.job_id, "progress", f"{self.stage} {done}/{total}", stage=self.stage,
                         done=done, total=total, run=run_id(self.lease.token) if self.lease else "")

    def should_yield(self) -> bool:
        if self.lease is not None and self.lease.lost.is_set():
            raise LeaseLost(f"{self.job_id}/{self.stage}: lease lost")
        now = time.monotonic()
        if now - self._last_cancel_check >= 0.5:
            self._last_cancel_check = now
            if self.store.status(self.job_id) == JobStatus.CANCELLED:
                raise JobCancelled(f"job {self.job_id} was cancelled")
        return now - self._started >= self.settings.task_budget_s

    def submission_seq(self) -> int | None:
        return self.store.project_seq(self.job_id)

    def job(self) -> JobView:
        return self.store.get(self.job_id)

    def events(self) -> list[dict[str, str]]:
        return [event for _id, event in self.store.events(self.job_id)]

    def recorded_issues(self) -> list[JSON]:
        return self.store.issues(self.job_id)

    def fan_out(self, batches: Sequence[int]) -> None:
        assert self.send_batch is not None
        todo = list(batches)
        sent = self.store.batches(self.job_id, self.stage).mark_sent(todo)
        for n in todo:
            self.send_batch(n, sent)

    def batches_pending(self, total: int) -> set[int]:
        state = self.store.batches(self.job_id, self.stage)
        failed = state.failed()
        if failed:
            n, error = min(failed.items())
            # a dead-letter's message names its batch already
            named = error.startswith(f"{self.stage} batch {n}: ")
            raise PermanentError(error if named else f"{self.stage} batch {n} failed: {error}")
        pending = set(range(total)) - state.done()
        now = time.time()
        if pending and self.batches_in_broker is not None and now - self._last_lost_check >= LOST_BATCH_GRACE_S / 2:
            self._last_lost_check = now
            sent = state.sent_at()
            quiet = {n for n in pending if now - sent.get(n, 0.0) >= LOST_BATCH_GRACE_S}
            lost = quiet - state.leased(quiet) - self.batches_in_broker()
            if lost:
                self.log(f"{self.stage}: sending {len(lost)} lost batch(es) again: {sorted(lost)[:10]}")
                self.fan_out(sorted(lost))
        return pending
