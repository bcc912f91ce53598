"""What a stage sees of the world: its job, its cursor, the artifact store, and a way to report.

Stages depend on the `StageContext` protocol only. The worker provides a Redis-backed context
with a lease and a time budget (worker/context.py); `LocalContext` here runs a stage in-process
with the cursor in memory, for pure stage tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.catalog import job_key
from pipeline.models import JSON, Issue, JobSpec, StageResult
from pipeline.settings import Settings
from pipeline.stores.artifacts import ArtifactStore
from pipeline.stores.jobs import JobView


class BatchContext(Protocol):
    """What one fanned-out batch of a stage sees: no cursor and no budget, it is one small unit."""

    job_id: str
    stage: str
    spec: JobSpec
    settings: Settings
    artifacts: ArtifactStore

    def key(self, name: str) -> str: ...

    def working_on(self, item: str) -> None:
        """Name the input this batch takes up next, as `StageContext.working_on` does for a stage: a batch whose
        process dies there, run after run, is failed naming it. Cheap per item: once per run of a healthy batch."""
        ...

    def record_issue(self, issue: Issue) -> None:
        """Recorded at once, listed once however often the batch is redone. A stage whose issues must match a
        report of its own (parse) writes them into its batch output instead, and its stage records them."""
        ...

    def log(self, message: str, level: str = "info") -> None: ...

    def secret(self, name: str) -> str | None: ...


BatchFn = Callable[[BatchContext, int], None]


class StageContext(Protocol):
    job_id: str
    stage: str
    spec: JobSpec
    settings: Settings
    artifacts: ArtifactStore

    @property
    def cursor(self) -> JSON | None:
        """The last saved cursor: None on a stage's first run, else where it stopped."""
        ...

    def key(self, name: str) -> str:
        """Artifact key of `name` in this stage's folder of the job. What other stages read is in catalog.py."""
        ...

    def save_cursor(self, cursor: JSON) -> None:
        """Persist the cursor after a batch's output is written: a crash resumes from here."""
        ...

    def progress(self, done: int, total: int) -> None: ...

    def working_on(self, item: str) -> None:
        """Name the input (a file) this stage takes up next: if its process dies there, over and over, the
        stage is dead-lettered with this name rather than redelivered forever. Cheap to call per item: the worker
        writes a name once per checkpoint, and each one only in the runs that follow a death."""
        ...

    def record_issue(self, issue: Issue) -> None: ...

    def should_yield(self) -> bool:
        """True when the time budget is spent. Raises JobCancelled or LeaseLost when the stage must stop."""
        ...

    def log(self, message: str, level: str = "info") -> None: ...

    def secret(self, name: str) -> str | None:
        """A secret of this job (e.g. `git_token`), never stored in job state."""
        ...

    def submission_seq(self) -> int | None:
        """This job's place in its project's submission order (1, 2, ...); None without a project."""
        ...

    def job(self) -> JobView:
        """The job as readers see it now: status, stages, result, error (what notify reports)."""
        ...

    def events(self) -> list[dict[str, str]]:
        """The job's events so far, oldest first: type, message, ts, and level or stage when they have one."""
        ...

    def recorded_issues(self) -> list[JSON]:
        """Every issue any stage of the job has recorded so far, oldest first, each once."""
        ...

    def fan_out(self, batches: Sequence[int]) -> None:
        """Have this stage's `run_batch(ctx, n)` run for each n, on whichever workers are free."""
        ...

    def batches_pending(self, total: int) -> set[int]:
        """Batch numbers in range(total) not finished yet (lost ones are sent again).

        Raises PermanentError when a batch failed for good."""
        ...


@dataclass
class LocalContext:
    """In-memory context for running stages without Redis or Celery."""

    job_id: str
    stage: str
    spec: JobSpec
    settings: Settings
    artifacts: ArtifactStore
    cursor: JSON | None = None
    budget_s: float | None = None
    secrets: dict[str, str] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    logs: list[tuple[str, str]] = field(default_factory=list)
    progress_seen: list[tuple[int, int]] = field(default_factory=list)
    cursors_saved: int = 0
    batch_fn: BatchFn | None = None
    done_batches: set[int] = field(default_factory=set)
    seq: int | None = None
    job_view: JobView | None = None
    job_events: list[dict[str, str]] = field(default_factory=list)
    item: str | None = None
    _started: float = field(default_factory=time.monotonic)

    def key(self, name: str) -> str:
        return job_key(self.job_id, self.stage, name)

    def save_cursor(self, cursor: JSON) -> None:
        self.cursor = cursor
        self.cursors_saved += 1

    def working_on(self, item: str) -> None:
        self.item = item

    def progress(self, done: int, total: int) -> None:
        self.progress_seen.append((done, total))

    def record_issue(self, issue: Issue) -> None:
        self.issues.append(issue)

    def should_yield(self) -> bool:
        return self.budget_s is not None and time.monotonic() - self._started >= self.budget_s

    def log(self, message: str, level: str = "info") -> None:
        self.logs.append((level, message))

    def secret(self, name: str) -> str | None:
        return self.secrets.get(name)

    def submission_seq(self) -> int | None:
        return self.seq

    def job(self) -> JobView:
        if self.job_view is None:
            raise RuntimeError(f"LocalContext for {self.stage} was given no job_view")
        return self.job_view

    def events(self) -> list[dict[str, str]]:
        return list(self.job_events)

    def recorded_issues(self) -> list[JSON]:
        return [i.to_json() for i in self.issues]

    def fan_out(self, batches: Sequence[int]) -> None:
        # In-process: run them right here, in order (pure tests and benchmarks).
        if self.batch_fn is None:
            raise RuntimeError(f"LocalContext for {self.stage} has no batch_fn to fan out to")
        for n in batches:
            if n not in self.done_batches:
                self.batch_fn(self, n)
                self.done_batches.add(n)

    def batches_pending(self, total: int) -> set[int]:
        return set(range(total)) - self.done_batches

    def restart_budget(self) -> None:
        self._started = time.monotonic()


def run_to_end(run: Callable[[StageContext], StageResult], ctx: LocalContext, max_calls: int = 10_000) -> StageResult:
    """Call a stage until it finishes, as successive continuations would; for tests and benchmarks."""
    for _ in range(max_calls):
        ctx.restart_budget()
        result = run(ctx)
        if result.finished:
            return result
    raise RuntimeError(f"stage {ctx.stage} did not finish in {max_calls} calls")
