"""What every stage task does around its stage, in one place: lease, skip-if-done, checkpoint, budget and
continuation, recording retries, dead-lettering. The retry policy itself is worker/policy.py; stage
tasks in tasks.py are a few lines each."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import redis
from celery import Task
from celery.exceptions import Ignore

from pipeline.errors import JobCancelled, LeaseLost, PermanentError
from pipeline.log_lines import add_log_fields
from pipeline.models import Issue, JobStatus, StageResult, StageState, StageStatus
from pipeline.plans import NOTIFY, build_finished, callback_record, fails_job, job_is_over, may_run
from pipeline.stores.jobs import JobStore, JobView
from worker import metrics
from worker.context import LeaseKeeper, RedisStageContext, run_id
from worker.inflight import batches_in_broker
from worker.policy import RETRYABLE, HonoursRetryAfter, died_message, failure_message
from worker.results import job_result

log = logging.getLogger("repobuild.worker")

StageFn = Callable[[RedisStageContext], StageResult]
BATCH_TASK = "repobuild.batch"


def run_died(store: JobStore, job_id: str, state: StageState) -> bool:
    """Whether the run that marked `state` running died under it: it never said it ended (a run whose lease
    expired while it lived, e.g. through a Redis restart, says so on its way out and is not a death)."""
    return state.run is None or store.run_ended(job_id, state.name) != state.run


def lost_runs_message(state: StageState, item: str | None) -> str:
    where = f" while on {item}" if item else f" at cursor {state.cursor}"
    return f"{state.name}: " + died_message(state.lost_runs, where)


class StageTask(HonoursRetryAfter, Task):
    abstract = True
    stage_name: str = ""

    @property
    def store(self) -> JobStore:
        return cast(JobStore, self.app.store)

    def log_fields(self, args: tuple[Any, ...]) -> dict[str, Any]:
        """What this task's log lines say it is about (worker/app.py sets them before the task runs)."""
        return {"job_id": args[0] if args else None, "stage": self.stage_name}

    def execute(self, job_id: str, stage_fn: StageFn, continuation: bool = False) -> str:
        name = self.stage_name
        store = self.store
        try:
            job = store.get(job_id)
        except KeyError:
            log.warning("job %s has no state (expired or never stored); dropping %s", job_id, name)
            raise Ignore() from None
        self._check_runnable(job)
        if job.stage(name).status == StageStatus.DONE:
            # A redelivered or duplicated message: move on down the chain. The copy that did the work
            # may have died between marking the stage done and completing the job, so finish that here
            # (every step of _after_done is idempotent).
            self._after_done(job_id, name)
            return "already-done"
        settings = self.app.repobuild_settings
        token = store.acquire_lease(job_id, name, settings.lease_ttl_s)
        if token is None:
            # Another worker runs this stage right now and will continue the chain itself.
            store.event(job_id, "duplicate", f"{name}: already running elsewhere; duplicate message dropped",
                        stage=name)
            raise Ignore()
        result: StageResult | None = None
        with self._run_ending(job_id, token), LeaseKeeper(store, job_id, name, token, settings.lease_ttl_s) as lease:
            state = store.stage(job_id, name)
            if state.status == StageStatus.DONE:
                self._after_done(job_id, name)
                return "already-done"
            self._count_lost_run(job_id, state)
            self._mark_started(job, state, token, continuation)
            add_log_fields(attempt=state.attempts)
            ctx = RedisStageContext(job_id=job_id, stage=name, spec=job.spec, settings=settings,
                                    artifacts=self.app.artifacts, store=store, job_secrets=store.secrets(job_id),
                                    state=state, lease=lease, send_batch=self._batch_sender(job_id),
                                    batches_in_broker=lambda: batches_in_broker(self.app, job_id, name))
            t0 = time.monotonic()
            metrics.TASKS_RUNNING.labels("stage").inc()
            try:
                result = stage_fn(ctx)
            except LeaseLost:
                raise Ignore() from None
            except JobCancelled:
                self._count_time(job_id, state, t0)
                state.status = StageStatus.CANCELLED
                store.put_stage(job_id, state, token, issues=ctx.take_issues())
                store.event(job_id, "cancelled", f"{name}: stopped, job cancelled", stage=name)
                raise Ignore() from None
            except RETRYABLE as exc:
                self._count_time(job_id, state, t0)  # a retried attempt's time is task time too
                state.status = StageStatus.QUEUED
                state.error = failure_message(exc)
                state.enqueued_at = time.time()
                store.put_stage(job_id, state, token)
                store.event(job_id, "retry", f"{name}: {state.error} (attempt {state.attempts})", stage=name)
                raise
            except Exception:
                # Failing for good: no retry will record again the issues found so far, and they may say why.
                store.put_stage(job_id, state, token, issues=ctx.take_issues())
                raise
            finally:
                metrics.TASKS_RUNNING.labels("stage").dec()
            self._count_time(job_id, state, t0)
            if not result.finished:
                state.status = StageStatus.QUEUED
                state.enqueued_at = time.time()
                if not store.put_stage(job_id, state, token, issues=ctx.take_issues()):
                    raise Ignore()
            else:
                self._mark_done(job_id, state, result, token, ctx.take_issues())
                metrics.stage_done(job.spec.task, state, result.counts)
        if not result.finished:
            # Budget spent: continue in a fresh task; replace() keeps the rest of the chain. The lease
            # is already released so the continuation can take it at once.
            store.event(job_id, "continue", f"{name}: budget spent, continuing at {state.cursor}", stage=name,
                        run=run_id(token))
            follow = self.si(job_id, continuation=True)
            raise self.replace(follow.set(countdown=result.wait_s) if result.wait_s else follow)
        self._after_done(job_id, name)
        return "done"

    def _count_time(self, job_id: str, state: StageState, t0: float) -> None:
        spent = time.monotonic() - t0
        metrics.TASK_TIME.labels(state.name, "stage").observe(spent)
        state.elapsed_s += spent
        # What its batches took so far, on every worker: the rest of the stage's task time (StageState.task_s).
        state.batch_s = self.store.batches(job_id, state.name).seconds()

    @contextlib.contextmanager
    def _run_ending(self, job_id: str, token: str) -> Iterator[None]:
        """Says the run ended however it ends in the task's hands: returned, or raised an Exception (Ignore,
        LeaseLost, a retry, a failure). Not on SystemExit or KeyboardInterrupt: then the process itself is
        going away, which is a death like a kill."""
        try:
            yield
        except Exception:
            self._say_run_ended(job_id, token)
            raise
        self._say_run_ended(job_id, token)

    def _say_run_ended(self, job_id: str, token: str) -> None:
        try:
            self.store.mark_run_ended(job_id, self.stage_name, run_id(token))
        except redis.RedisError as exc:
            # Redis is gone again: the next run will count this one as died, which the retry limit bounds.
            log.warning("%s/%s: could not record that run %s ended: %s", job_id, self.stage_name,
                        run_id(token), exc)

    def _count_lost_run(self, job_id: str, state: StageState) -> None:
        if state.status == StageStatus.RUNNING and run_died(self.store, job_id, state):
            # We hold the lease, yet the stage says running and its run never said it ended: it died.
            state.lost_runs += 1
        if state.lost_runs >= self.app.repobuild_settings.max_retries:
            # A killed process cannot count its own failure (its message is requeued, not failed), so the
            # runs after it do: past the retry limit, an input that kills its process every time is
            # dead-lettered, naming it, instead of being redelivered forever.
            raise PermanentError(lost_runs_message(state, self.store.noted_item(job_id, state.name)))

    def _batch_sender(self, job_id: str) -> Callable[[int, float], None]:
        task = self.app.tasks[BATCH_TASK]
        return lambda n, sent: task.apply_async((job_id, self.stage_name, n), {"sent_at": sent})

    def _check_runnable(self, job: JobView) -> None:
        name = self.stage_name
        if name not in {s.name for s in job.stages} or not may_run(job, name):
            raise Ignore()

    def _mark_started(self, job: JobView, state: StageState, token: str, continuation: bool) -> None:
        store, job_id, now = self.store, job.spec.job_id, time.time()
        if continuation:
            state.continuations += 1
        else:
            state.attempts += 1
            if state.cursor is not None:
                state.resumed_from = state.cursor
                store.event(job_id, "resumed", f"{state.name}: resuming at {state.cursor}", stage=state.name)
        state.status = StageStatus.RUNNING
        state.run = run_id(token)
        state.started_at = state.started_at or now
        state.error = None
        if not store.put_stage(job_id, state, token):
            raise Ignore()
        if job.status == JobStatus.QUEUED:
            store.set_job(job_id, JobStatus.RUNNING, started_at=now)
        # Which process runs it: what an operator (or a test) needs to find a stuck or misbehaving run.
        store.event(job_id, "started", f"{state.name}: started (attempt {state.attempts})", stage=state.name,
                    run=run_id(token), worker=self.request.hostname or "", pid=os.getpid())

    def _mark_done(self, job_id: str, state: StageState, result: StageResult, token: str,
                   issues: list[Issue]) -> None:
        state.status = StageStatus.DONE
        state.lost_runs = 0
        state.finished_at = time.time()
        state.summary = result.summary
        state.error = None
        if not self.store.put_stage(job_id, state, token, issues=issues):
            raise Ignore()
        self.store.event(job_id, "done", f"{state.name}: done in {state.wall_s():.2f}s "
                         f"({state.task_s:.2f}s of task time)", stage=state.name, run=run_id(token))

    def _after_done(self, job_id: str, name: str) -> None:
        store = self.store
        job = store.get(job_id)
        if job.status == JobStatus.RUNNING and build_finished(job):
            result = job_result(job, store.issue_count(job_id))
            store.set_job(job_id, JobStatus.COMPLETED, finished_at=time.time(), result=result)
            store.event(job_id, "completed", "job completed")
            metrics.job_finished(job.spec.task, JobStatus.COMPLETED)
            job = store.get(job_id)
        if job_is_over(job):
            store.set_job(job_id, callback=callback_record(job))
            if job.status == JobStatus.COMPLETED:
                # Its callback is delivered and a completed job is never run again: the caller's tokens and
                # passwords need not wait out the job's TTL (days) in Redis. A failed or cancelled job keeps them
                # for a retry.
                store.forget_secrets(job_id)
            store.deactivate(job_id)
            return
        # The chain sends the next stage's message right after we return: stamp it now, so the
        # reconciler gives that message its grace period instead of re-driving the stage.
        following = job.next_stage()
        if following is not None and following.status == StageStatus.PENDING:
            following.status = StageStatus.QUEUED
            following.enqueued_at = time.time()
            store.put_stage(job_id, following)

    def on_retry(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 einfo: Any) -> None:
        metrics.RETRIES.labels(self.stage_name, "stage").inc()

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                   einfo: Any) -> None:
        """Dead-letter: the stage failed for good (permanent error, or retries exhausted)."""
        job_id, name, store = args[0], self.stage_name, self.store
        message = failure_message(exc)
        try:
            state = store.stage(job_id, name)
        except KeyError:
            return
        state.status = StageStatus.FAILED
        state.error = message
        state.finished_at = time.time()
        store.put_stage(job_id, state)
        if not fails_job(name):
            metrics.CALLBACK_FAILURES.inc()
            store.set_job(job_id, callback=callback_record(store.get(job_id)))
            store.event(job_id, "callback-failed", f"callback failed: {message}")
            store.deactivate(job_id)
            return
        metrics.DEAD_LETTERS.labels(name).inc()
        metrics.job_finished(store.get(job_id).spec.task, JobStatus.FAILED)
        store.set_job(job_id, JobStatus.FAILED, finished_at=time.time(),
                      error={"stage": name, "message": message, "attempts": state.attempts,
                             "type": type(exc).__name__})
        store.event(job_id, "failed", f"{name} failed after {state.attempts} attempt(s): {message}",
                    stage=name, level="error")
        self.app.tasks[f"repobuild.{NOTIFY}"].si(job_id).apply_async()
