"""The stage task's state transitions, unit by unit, on the in-memory store: no Redis, no worker.

Each test executes the task as a worker would (`execute`, or Celery's autoretry wrapper around it, then
`on_failure` as Celery's tracer calls it) with a fake stage, and reads the job back from the store.
Durability under real crashes is tests/e2e's business; this is the bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.exceptions import Ignore, Retry

from pipeline.errors import JobCancelled, PermanentError, TransientError
from pipeline.models import Issue, JobStatus, StageResult, StageStatus
from pipeline.stores.jobs_memory import MemoryJobStore
from tests.worker.in_memory import FakeClock, Outbox, make_job, memory_app, recording
from worker.context import RedisStageContext
from worker.policy import RETRYABLE, task_options
from worker.repobuild_app import RepobuildCelery
from worker.stage_task import StageTask

Stage = Callable[[RedisStageContext], StageResult]
MAX_RETRIES = 3
PLAN = ("work", "next", "notify")


@pytest.fixture
def app(tmp_path: Path, memory_store: MemoryJobStore) -> RepobuildCelery:
    app = memory_app(tmp_path, memory_store, lease_ttl_s=3.0, max_retries=MAX_RETRIES, retry_backoff_max_s=2)
    # A stage of our own, registered as worker/tasks.py registers the real ones; each test sets its body.

    def work(self: StageTask, job_id: str, continuation: bool = False) -> str:
        return self.execute(job_id, self.fake_stage, continuation)

    app.task(base=StageTask, bind=True, shared=False, name="repobuild.work", stage_name="work",
             **task_options(app.repobuild_settings))(work)
    return app


@pytest.fixture
def task(app: RepobuildCelery) -> StageTask:
    t: StageTask = app.tasks["repobuild.work"]
    return t


@pytest.fixture
def outbox() -> Iterator[Outbox]:
    with recording() as box:
        yield box


def run(task: StageTask, stage: Stage, job_id: str = "j1", continuation: bool = False) -> str:
    """The task's own work, called directly with a fake stage (no Celery wrapper around it)."""
    return task.execute(job_id, stage, continuation)


def deliver(task: StageTask, stage: Stage, retries: int, job_id: str = "j1") -> str:
    """Run the task body through Celery's autoretry wrapper, as the (retries+1)-th delivery of its message."""
    task.fake_stage = stage  # type: ignore[attr-defined]
    task.push_request(id=f"msg-{retries}", args=(job_id,), kwargs={}, retries=retries, called_directly=False)
    try:
        return str(task.run(job_id))
    finally:
        task.pop_request()


def dead_letter(task: StageTask, exc: BaseException, job_id: str = "j1") -> None:
    """What Celery's tracer does with a task that raised for good."""
    task.on_failure(exc, "msg", (job_id,), {}, None)


def kinds(store: MemoryJobStore, job_id: str = "j1") -> list[str]:
    return [fields["type"] for _id, fields in store.events(job_id)]


def test_a_stage_that_finishes_is_done_and_stamps_the_next_one(task: StageTask, memory_store: MemoryJobStore,
                                                               outbox: Outbox) -> None:
    make_job(memory_store, stages=PLAN)
    assert run(task, lambda ctx: StageResult.done(posts=3)) == "done"
    job = memory_store.get("j1")
    work, following = job.stage("work"), job.stage("next")
    assert (work.status, work.attempts, work.summary, work.error) == (StageStatus.DONE, 1, {"posts": 3}, None)
    assert job.status == JobStatus.RUNNING
    # The chain sends the next message itself; the task marks it queued so the reconciler waits for it.
    assert following.status == StageStatus.QUEUED and following.enqueued_at is not None
    assert not memory_store.lease_held("j1", "work") and outbox.sent == []
    assert kinds(memory_store)[-2:] == ["started", "done"]


def test_the_last_build_stage_completes_the_job(task: StageTask, memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=("work", "notify"))
    run(task, lambda ctx: StageResult.done())
    job = memory_store.get("j1")
    assert job.status == JobStatus.COMPLETED and job.finished_at is not None
    assert job.result is not None and job.result["jobId"] == "j1" and "work" in job.result["stages"]
    assert "completed" in kinds(memory_store)


def test_already_done_is_a_no_op_that_moves_on(task: StageTask, memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=PLAN)
    state = memory_store.stage("j1", "work")
    state.status, state.attempts, state.summary = StageStatus.DONE, 1, {"posts": 3}
    memory_store.put_stage("j1", state)
    before = kinds(memory_store)

    def must_not_run(ctx: RedisStageContext) -> StageResult:
        raise AssertionError("a done stage ran again")

    assert run(task, must_not_run) == "already-done"
    assert memory_store.stage("j1", "work") == state and kinds(memory_store) == before
    assert not memory_store.lease_held("j1", "work")


def test_a_redelivered_last_stage_completes_a_job_its_dead_worker_left_running(task: StageTask,
                                                                             memory_store: MemoryJobStore) -> None:
    # The worker marked the last build stage done, then died before it marked the job completed.
    make_job(memory_store, stages=("work", "notify"))
    state = memory_store.stage("j1", "work")
    state.status, state.attempts = StageStatus.DONE, 1
    memory_store.put_stage("j1", state)
    memory_store.set_job("j1", JobStatus.RUNNING)

    def must_not_run(ctx: RedisStageContext) -> StageResult:
        raise AssertionError("a done stage ran again")

    assert run(task, must_not_run) == "already-done"
    job = memory_store.get("j1")
    assert job.status == JobStatus.COMPLETED and job.result is not None and job.finished_at is not None
    assert kinds(memory_store).count("completed") == 1
    run(task, must_not_run)  # and a second copy completes nothing twice
    assert kinds(memory_store).count("completed") == 1


def test_a_duplicate_message_while_the_stage_runs_elsewhere_is_dropped(task: StageTask,
                                                                       memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=PLAN)
    assert memory_store.acquire_lease("j1", "work", 30) is not None  # another worker is on it

    def must_not_run(ctx: RedisStageContext) -> StageResult:
        raise AssertionError("ran without the lease")

    with pytest.raises(Ignore):
        run(task, must_not_run)
    assert kinds(memory_store)[-1] == "duplicate" and memory_store.stage("j1", "work").attempts == 0


def test_a_lost_lease_stops_the_stage_without_writing(task: StageTask, memory_store: MemoryJobStore,
                                                      clock: FakeClock) -> None:
    make_job(memory_store, stages=PLAN)
    taken: list[str] = []

    def paused_too_long(ctx: RedisStageContext) -> StageResult:
        clock.advance(10)  # past the 3 s lease: the reconciler has given the stage to another worker
        token = memory_store.acquire_lease("j1", "work", 30)
        assert token is not None
        taken.append(token)
        ctx.save_cursor({"next": 5})  # refused: the lease is not ours any more
        raise AssertionError("wrote after losing the lease")

    with pytest.raises(Ignore):
        run(task, paused_too_long)
    state = memory_store.stage("j1", "work")
    assert state.status == StageStatus.RUNNING and state.cursor is None  # as we left it when we still held it
    assert memory_store.lease_held("j1", "work")  # the new owner's lease is not released by the old owner
    assert memory_store.renew_lease("j1", "work", taken[0], 30)


def test_budget_spent_continues_in_a_fresh_task_from_the_cursor(task: StageTask, memory_store: MemoryJobStore,
                                                                outbox: Outbox) -> None:
    make_job(memory_store, stages=PLAN)

    def first_half(ctx: RedisStageContext) -> StageResult:
        ctx.save_cursor({"next": 50})
        return StageResult.more()

    with pytest.raises(Ignore):  # replace(): the continuation takes this task's place in the chain
        run(task, first_half)
    state = memory_store.stage("j1", "work")
    assert (state.status, state.cursor, state.attempts) == (StageStatus.QUEUED, {"next": 50}, 1)
    assert [(s.task, s.args, s.kwargs) for s in outbox.sent] == [("repobuild.work", ("j1",), {"continuation": True})]
    assert not memory_store.lease_held("j1", "work") and "continue" in kinds(memory_store)

    seen: list[Any] = []

    def second_half(ctx: RedisStageContext) -> StageResult:
        seen.append(ctx.cursor)
        return StageResult.done()

    assert run(task, second_half, continuation=True) == "done"
    state = memory_store.stage("j1", "work")
    assert seen == [{"next": 50}]
    assert (state.status, state.attempts, state.continuations) == (StageStatus.DONE, 1, 1)


def test_a_stage_waiting_on_batches_continues_later(task: StageTask, memory_store: MemoryJobStore,
                                                    outbox: Outbox) -> None:
    make_job(memory_store, stages=PLAN)
    with pytest.raises(Ignore):
        run(task, lambda ctx: StageResult.more(wait_s=5))
    assert len(outbox.sent) == 1 and outbox.sent[0].eta is not None


@pytest.mark.parametrize("error", [TransientError("server busy"), redis.exceptions.ConnectionError("reset")])
def test_a_retryable_error_is_recorded_and_retried_with_backoff(task: StageTask, memory_store: MemoryJobStore,
                                                                outbox: Outbox, error: Exception) -> None:
    make_job(memory_store, stages=PLAN)

    def flaky(ctx: RedisStageContext) -> StageResult:
        raise error

    with pytest.raises(Retry) as retry:
        deliver(task, flaky, retries=0)
    state = memory_store.stage("j1", "work")
    message = f"{type(error).__name__}: {error}"
    assert (state.status, state.error, state.attempts) == (StageStatus.QUEUED, message, 1)
    assert memory_store.events("j1")[-1][1]["message"] == f"work: {message} (attempt 1)"
    # Celery sent the retry itself: the same task and job, after a countdown within the backoff cap.
    assert [(s.task, s.args) for s in outbox.sent] == [("repobuild.work", ("j1",))]
    assert retry.value.when is not None and 0 <= float(retry.value.when) <= 2
    assert not memory_store.lease_held("j1", "work") and memory_store.get("j1").status == JobStatus.RUNNING


@pytest.mark.parametrize(("asked", "waited"), [(1.5, 1.5), (30.0, 2.0)])  # at least asked, at most the cap (2 s)
def test_a_retry_waits_the_retry_after_the_server_asked_for(task: StageTask, memory_store: MemoryJobStore,
                                                            outbox: Outbox, asked: float, waited: float) -> None:
    make_job(memory_store, stages=PLAN)

    def rate_limited(ctx: RedisStageContext) -> StageResult:
        raise TransientError("embeddings batch 1 of 3: HTTP 429 (slow down) after 3 attempts", retry_after_s=asked)

    for _ in range(5):  # Celery's own countdown is uniform in [0, 1] on a first retry: the floor is the server's
        with pytest.raises(Retry) as retry:
            deliver(task, rate_limited, retries=0)
        assert retry.value.when is not None and float(retry.value.when) == pytest.approx(waited, abs=0.01)
    assert all(s.eta is not None for s in outbox.sent)


def test_a_permanent_error_is_dead_lettered_at_once(task: StageTask, memory_store: MemoryJobStore,
                                                    outbox: Outbox) -> None:
    make_job(memory_store, stages=PLAN)

    def broken(ctx: RedisStageContext) -> StageResult:
        raise PermanentError("repository not found: example/missing")

    with pytest.raises(PermanentError) as raised:
        deliver(task, broken, retries=0)  # not retried: Celery re-raises at once
    assert outbox.sent == []
    dead_letter(task, raised.value)
    job = memory_store.get("j1")
    assert job.status == JobStatus.FAILED and job.finished_at is not None
    assert job.error == {"stage": "work", "message": "repository not found: example/missing", "attempts": 1,
                         "type": "PermanentError"}
    assert (job.stage("work").status, job.stage("work").error) == (
        StageStatus.FAILED, "repository not found: example/missing")
    assert job.stage("next").status == StageStatus.PENDING
    assert memory_store.events("j1")[-1][1]["message"] == (
        "work failed after 1 attempt(s): repository not found: example/missing")
    assert outbox.names() == ["repobuild.notify"]  # the failure is still reported to the caller


def test_retries_exhausted_are_dead_lettered_with_the_attempts(task: StageTask, memory_store: MemoryJobStore,
                                                               outbox: Outbox) -> None:
    make_job(memory_store, stages=PLAN)

    def down(ctx: RedisStageContext) -> StageResult:
        raise TransientError("server busy")

    for retries in range(MAX_RETRIES):
        with pytest.raises(Retry):
            deliver(task, down, retries=retries)
    with pytest.raises(TransientError) as raised:  # the last allowed delivery: Celery gives up
        deliver(task, down, retries=MAX_RETRIES)
    assert outbox.names() == ["repobuild.work"] * MAX_RETRIES
    dead_letter(task, raised.value)
    job = memory_store.get("j1")
    assert job.status == JobStatus.FAILED
    assert job.error == {"stage": "work", "message": "TransientError: server busy", "attempts": MAX_RETRIES + 1,
                         "type": "TransientError"}
    assert job.stage("work").status == StageStatus.FAILED
    assert outbox.names()[-1] == "repobuild.notify"


def test_issues_wait_for_the_checkpoint_but_a_failure_for_good_keeps_them(task: StageTask,
                                                                         memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=PLAN)
    seen: list[int] = []

    def finds_then_fails(ctx: RedisStageContext) -> StageResult:
        ctx.record_issue(Issue("work", "a.md", "broken link"))
        seen.append(memory_store.issue_count("j1"))  # not yet: the work it belongs to is not checkpointed
        ctx.save_cursor({"next": 1})
        seen.append(memory_store.issue_count("j1"))
        ctx.record_issue(Issue("work", "b.md", "cannot parse"))
        raise PermanentError("b.md: cannot parse")

    with pytest.raises(PermanentError):
        run(task, finds_then_fails)
    assert seen == [0, 1] and [i["path"] for i in memory_store.issues("j1")] == ["a.md", "b.md"]


class Died(BaseException):
    """Stands for the process dying mid-stage: nothing of the task's own handling runs (the lease is let go
    here rather than lapsing, which is the same to the next run)."""


def test_runs_that_die_without_a_word_are_dead_lettered_naming_the_input(task: StageTask,
                                                                         memory_store: MemoryJobStore,
                                                                         outbox: Outbox) -> None:
    make_job(memory_store, stages=PLAN)

    def killed_on_a_file(ctx: RedisStageContext) -> StageResult:
        ctx.working_on("notes/poisoned.md")
        raise Died()

    for n in range(MAX_RETRIES):
        with pytest.raises(Died):
            run(task, killed_on_a_file)
        assert memory_store.stage("j1", "work").lost_runs == n  # counted by the run after it

    def must_not_run(ctx: RedisStageContext) -> StageResult:
        raise AssertionError("redelivered past the limit")

    with pytest.raises(PermanentError) as raised:
        run(task, must_not_run)
    dead_letter(task, raised.value)
    job = memory_store.get("j1")
    assert job.status == JobStatus.FAILED and job.error is not None
    assert job.error["message"] == (f"work: its process died {MAX_RETRIES} times in a row while on notes/poisoned.md "
                                    "(killed, out of memory or crashed, each time without a word); dead-lettered "
                                    "instead of redelivered")
    assert job.stage("work").attempts == MAX_RETRIES and outbox.names() == ["repobuild.notify"]


def test_a_healthy_run_names_the_first_input_after_each_checkpoint_and_a_run_after_a_death_every_one(
        task: StageTask, memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=PLAN)

    def dies_in_its_second_batch(ctx: RedisStageContext) -> StageResult:
        for n, item in enumerate(["a.md", "b.md", "c.md", "d.md"]):
            if n == 2:
                ctx.save_cursor({"next": n})
            ctx.working_on(item)
        raise Died()

    with pytest.raises(Died):
        run(task, dies_in_its_second_batch)
    # no write per item: the name covers the batch it began (tests/worker/test_redis_commands.py counts them)
    assert memory_store.noted_item("j1", "work") == "c.md or an input after it"
    with pytest.raises(Died):
        run(task, dies_in_its_second_batch)
    assert memory_store.noted_item("j1", "work") == "d.md"


def test_a_run_that_moved_the_cursor_before_dying_starts_the_count_again(task: StageTask,
                                                                         memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=PLAN)

    def progresses_then_dies(ctx: RedisStageContext) -> StageResult:
        ctx.save_cursor({"next": int((ctx.cursor or {}).get("next", 0)) + 1})
        raise Died()

    for _ in range(MAX_RETRIES * 2):
        with pytest.raises(Died):
            run(task, progresses_then_dies)
    state = memory_store.stage("j1", "work")
    assert state.cursor == {"next": MAX_RETRIES * 2} and state.status == StageStatus.RUNNING
    assert run(task, lambda ctx: StageResult.done()) == "done"


def test_a_run_whose_lease_lapsed_while_it_lived_is_not_counted_as_died(task: StageTask,
                                                                       memory_store: MemoryJobStore) -> None:
    """Redis down longer than the lease (or the worker paused): the run lives on, finds its lease gone at its
    next checkpoint and stops. That is not a death: however often it happens, the stage is not dead-lettered."""
    make_job(memory_store, stages=PLAN)

    def fenced_off(ctx: RedisStageContext) -> StageResult:
        assert ctx.lease is not None
        memory_store.release_lease(ctx.job_id, "work", ctx.lease.token)  # lapsed; no one else took it yet
        ctx.save_cursor({"next": 1})  # the fenced write fails: LeaseLost, and the task lets go
        raise AssertionError("the write should have been refused")

    for _ in range(MAX_RETRIES + 1):
        with pytest.raises(Ignore):
            run(task, fenced_off)
        state = memory_store.stage("j1", "work")
        assert state.status == StageStatus.RUNNING and state.lost_runs == 0
    assert run(task, lambda ctx: StageResult.done()) == "done"

    # while a run that did die (no word on its way out) is still counted by the run after it
    make_job(memory_store, job_id="j2", stages=PLAN)
    with pytest.raises(Died):
        run(task, lambda ctx: (_ for _ in ()).throw(Died()), job_id="j2")
    with pytest.raises(Ignore):
        run(task, fenced_off, job_id="j2")
    assert memory_store.stage("j2", "work").lost_runs == 1


def test_cancel_while_running_stops_the_stage_between_batches(task: StageTask, memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=PLAN)

    def long_one(ctx: RedisStageContext) -> StageResult:
        ctx.save_cursor({"next": 10})
        memory_store.set_job("j1", JobStatus.CANCELLED)  # POST /jobs/<id>/cancel, meanwhile
        while not ctx.should_yield():
            pass
        raise AssertionError("not stopped")

    with pytest.raises(Ignore):
        run(task, long_one)
    state = memory_store.stage("j1", "work")
    assert (state.status, state.cursor) == (StageStatus.CANCELLED, {"next": 10})
    assert kinds(memory_store)[-1] == "cancelled" and not memory_store.lease_held("j1", "work")


def test_a_stage_raising_job_cancelled_is_marked_cancelled(task: StageTask, memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=PLAN)

    def cancelled(ctx: RedisStageContext) -> StageResult:
        raise JobCancelled("job j1 was cancelled")

    with pytest.raises(Ignore):
        run(task, cancelled)
    assert memory_store.stage("j1", "work").status == StageStatus.CANCELLED


@pytest.mark.parametrize("status", [JobStatus.CANCELLED, JobStatus.FAILED])
def test_a_stale_message_of_a_finished_job_is_dropped(task: StageTask, memory_store: MemoryJobStore,
                                                      status: JobStatus) -> None:
    make_job(memory_store, stages=PLAN)
    memory_store.set_job("j1", status)

    def must_not_run(ctx: RedisStageContext) -> StageResult:
        raise AssertionError("ran for a job that is over")

    with pytest.raises(Ignore):
        run(task, must_not_run)
    assert memory_store.stage("j1", "work").attempts == 0


def test_a_job_whose_state_expired_is_dropped(task: StageTask, memory_store: MemoryJobStore, clock: FakeClock) -> None:
    make_job(memory_store, stages=PLAN)
    clock.advance(memory_store.ttl_s + 1)
    with pytest.raises(Ignore):
        run(task, lambda ctx: StageResult.done())


def test_a_retried_attempt_resumes_from_the_cursor(task: StageTask, memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=PLAN)

    def half_then_blip(ctx: RedisStageContext) -> StageResult:
        ctx.save_cursor({"next": 7})
        raise TransientError("blip")

    with pytest.raises(Retry):
        deliver(task, half_then_blip, retries=0)
    seen: list[Any] = []

    def rest(ctx: RedisStageContext) -> StageResult:
        seen.append(ctx.cursor)
        return StageResult.done()

    assert deliver(task, rest, retries=1) == "done"
    state = memory_store.stage("j1", "work")
    assert seen == [{"next": 7}] and (state.attempts, state.resumed_from) == (2, {"next": 7})
    assert "resumed" in kinds(memory_store)


def test_every_registered_task_carries_the_policy(app: RepobuildCelery) -> None:
    options = task_options(app.repobuild_settings)
    names = [n for n in app.tasks if n.startswith("repobuild.")]
    assert "repobuild.batch" in names and "repobuild.parse" in names
    for name in names:
        t = app.tasks[name]
        assert {k: getattr(t, k) for k in options} == options, name
        assert t.autoretry_for == RETRYABLE and hasattr(t, "_orig_run"), name  # Celery wrapped it for retries
    assert (app.conf.task_acks_late, app.conf.task_reject_on_worker_lost) == (True, True)
