"""The fan-out task: one batch of a stage, on any worker. Joined by a Redis set (stores/batches.py);
its retry policy is worker/policy.py's, as the stage tasks'."""

from __future__ import annotations

import time
from typing import Any, cast

from celery import Task
from celery.exceptions import Ignore

from pipeline.errors import PermanentError
from pipeline.models import JobStatus
from pipeline.stages.context import BatchFn
from pipeline.stores.jobs import JobStore
from pipeline.stores.keys import lease_holder
from worker import metrics
from worker.context import LeaseKeeper, RedisBatchContext
from worker.policy import RETRYABLE, HonoursRetryAfter, died_message, failure_message


def lost_batch_message(stage: str, n: int, lost: int, item: str | None) -> str:
    return f"{stage} batch {n}: " + died_message(lost, f" while on {item}" if item else "")


class BatchTask(HonoursRetryAfter, Task):
    abstract = True
    batch_functions: dict[str, BatchFn] = {}

    @property
    def store(self) -> JobStore:
        return cast(JobStore, self.app.store)

    def log_fields(self, args: tuple[Any, ...]) -> dict[str, Any]:
        """What this task's log lines say it is about (worker/app.py sets them before the task runs)."""
        job_id, stage = (args[0], args[1]) if len(args) >= 2 else (None, None)
        return {"job_id": job_id, "stage": stage, "attempt": self.request.retries + 1}

    def execute(self, job_id: str, stage: str, n: int, sent_at: float | None = None) -> str:
        store = self.store
        status = store.status(job_id)
        if status is None or status in (JobStatus.CANCELLED, JobStatus.FAILED):
            raise Ignore()
        state = store.batches(job_id, stage)
        if state.is_done(n):
            return "already-done"
        settings = self.app.repobuild_settings
        holder = lease_holder(stage, n)
        token = store.acquire_lease(job_id, holder, settings.lease_ttl_s)
        if token is None:
            raise Ignore()  # the same batch runs elsewhere right now
        fn = self.batch_functions.get(stage)
        if fn is None:
            raise PermanentError(f"stage {stage} has no batches")
        with LeaseKeeper(store, job_id, holder, token, settings.lease_ttl_s):
            lost = state.lost_runs(n)
            if lost >= settings.max_retries:
                # As for stages (stage_task.py): a killed process cannot count its own failure, so the runs
                # after it do, and a batch that kills its process every time fails instead of coming back.
                raise PermanentError(lost_batch_message(stage, n, lost, state.noted_item(n)))
            state.mark_started(n)
            t0 = time.monotonic()
            metrics.TASKS_RUNNING.labels("batch").inc()
            try:
                job = store.get(job_id)
                ctx = RedisBatchContext(job_id=job_id, stage=stage, spec=job.spec, settings=settings,
                                        artifacts=self.app.artifacts, store=store, job_secrets=store.secrets(job_id),
                                        batch=n, batches=state, careful=lost > 0)
                fn(ctx, n)
                state.mark_done(n)
            except RETRYABLE as exc:
                # Celery retries it (policy.py); the job's events say why its stage is waiting.
                store.event(job_id, "retry", f"{stage} batch {n}: {failure_message(exc)}", stage=stage)
                raise
            finally:
                spent = time.monotonic() - t0
                metrics.TASKS_RUNNING.labels("batch").dec()
                metrics.TASK_TIME.labels(stage, "batch").observe(spent)
                state.add_seconds(n, spent)  # the stage's task time counts its batches (StageState.batch_s)
                state.mark_ended(n)  # not reached when the process dies: that is what lost_runs counts
        metrics.BATCHES.labels(stage).inc()
        return "done"

    def on_retry(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 einfo: Any) -> None:
        metrics.RETRIES.labels(str(args[1]), "batch").inc()

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                   einfo: Any) -> None:
        job_id, stage, n = args
        state = self.store.batches(job_id, stage)
        sent, latest = kwargs.get("sent_at"), state.sent_at().get(int(n))
        if sent is not None and latest is not None and float(sent) < latest:
            # A copy from before the job was retried (the retry sent this batch again), still running through
            # its own retries when the job was resumed: its failure is not the resumed stage's (found by an
            # OpenAI outage past the retry bound, then POST /retry while a hung request was still running).
            self.store.event(job_id, "stale", f"{stage} batch {n}: a copy sent before the retry failed; ignored",
                             stage=stage)
            return
        state.mark_failed(int(n), failure_message(exc))
