"""`stuck_stage`, the reconciler's decision, case by case, on the in-memory store: which stage of a job
to re-drive, given its state, its lease, the messages in the broker and the time."""

from __future__ import annotations

import pytest

from pipeline.models import JobStatus, StageStatus
from pipeline.stores.jobs_memory import MemoryJobStore
from tests.worker.in_memory import FakeClock, make_job
from worker.inflight import BrokerView
from worker.reconciler import GRACE_S, lock_wait_s, stuck_stage

PLAN = ("fetch", "parse", "notify")


def set_stage(store: MemoryJobStore, name: str, status: StageStatus, enqueued_at: float | None = None,
              job_id: str = "j1") -> None:
    state = store.stage(job_id, name)
    state.status = status
    if enqueued_at is not None:
        state.enqueued_at = enqueued_at
    store.put_stage(job_id, state)


def stuck(store: MemoryJobStore, now: float, in_broker: frozenset[str] = frozenset(),
          orphaned: frozenset[str] = frozenset(), batches_of: frozenset[str] = frozenset()) -> str | None:
    """`in_broker`: stages of j1 whose message a queue or a live worker holds; `orphaned`: stages whose message
    only a dead worker holds; `batches_of`: stages with a live batch message (no message of the stage itself)."""
    view = BrokerView(live=[(f"repobuild.{s}", ["j1"]) for s in in_broker]
                      + [("repobuild.batch", ["j1", s, 0]) for s in batches_of],
                      orphaned=[(f"repobuild.{s}", ["j1"]) for s in orphaned])
    found = stuck_stage(store, store.get("j1"), view, now)
    return found[0].name if found is not None else None


@pytest.mark.parametrize(("job_status", "stage"), [(JobStatus.RUNNING, "fetch"), (JobStatus.CANCELLED, "notify")])
def test_running_with_its_lease_held_is_not_stuck(memory_store: MemoryJobStore, job_status: JobStatus,
                                                  stage: str) -> None:
    make_job(memory_store, stages=PLAN)
    memory_store.set_job("j1", job_status)
    set_stage(memory_store, stage, StageStatus.RUNNING, enqueued_at=0.0)
    memory_store.acquire_lease("j1", stage, 3)
    assert stuck(memory_store, now=1e12) is None


def test_running_with_its_lease_expired_is_stuck_at_once(memory_store: MemoryJobStore, clock: FakeClock) -> None:
    make_job(memory_store, stages=PLAN)
    memory_store.set_job("j1", JobStatus.RUNNING)
    set_stage(memory_store, "fetch", StageStatus.RUNNING, enqueued_at=0.0)
    memory_store.acquire_lease("j1", "fetch", 3)
    clock.advance(3)  # the worker died: nobody renewed it
    # Even with a message in the broker and inside the grace period: a running stage has been taken.
    assert stuck(memory_store, now=0.0, in_broker=frozenset({"fetch"})) == "fetch"


def test_waiting_with_its_message_in_the_broker_is_not_stuck(memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=PLAN)
    set_stage(memory_store, "fetch", StageStatus.QUEUED, enqueued_at=0.0)
    assert stuck(memory_store, now=1e12, in_broker=frozenset({"fetch"})) is None


@pytest.mark.parametrize("status", [StageStatus.QUEUED, StageStatus.PENDING])
def test_waiting_without_a_message_is_stuck_only_after_the_grace_period(memory_store: MemoryJobStore,
                                                                        status: StageStatus) -> None:
    make_job(memory_store, stages=PLAN)
    set_stage(memory_store, "fetch", StageStatus.DONE)
    set_stage(memory_store, "parse", status, enqueued_at=100.0)
    assert stuck(memory_store, now=100.0 + GRACE_S - 0.1) is None  # its message may still be on its way
    assert stuck(memory_store, now=100.0 + GRACE_S) == "parse"  # the chain lost its tail


def test_a_never_enqueued_stage_is_stuck_once_its_grace_is_over(memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=PLAN)
    set_stage(memory_store, "fetch", StageStatus.DONE)
    state = memory_store.stage("j1", "parse")
    state.enqueued_at = None
    memory_store.put_stage("j1", state)
    assert stuck(memory_store, now=GRACE_S) == "parse"


def test_a_failed_stage_is_left_to_a_retry_request(memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=PLAN)
    memory_store.set_job("j1", JobStatus.RUNNING)
    set_stage(memory_store, "fetch", StageStatus.FAILED, enqueued_at=0.0)
    assert stuck(memory_store, now=1e12) is None


def test_a_completed_job_drives_its_notify(memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=PLAN)
    for name in ("fetch", "parse"):
        set_stage(memory_store, name, StageStatus.DONE)
    memory_store.set_job("j1", JobStatus.COMPLETED)
    set_stage(memory_store, "notify", StageStatus.QUEUED, enqueued_at=0.0)
    assert stuck(memory_store, now=1e12) == "notify"
    set_stage(memory_store, "notify", StageStatus.DONE)
    assert stuck(memory_store, now=1e12) is None


def test_a_completed_job_whose_build_is_not_done_is_left_alone(memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=PLAN)
    set_stage(memory_store, "fetch", StageStatus.DONE)
    memory_store.set_job("j1", JobStatus.COMPLETED)
    assert stuck(memory_store, now=1e12) is None


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELLED])
def test_a_failed_or_cancelled_job_still_notifies(memory_store: MemoryJobStore, status: JobStatus) -> None:
    make_job(memory_store, stages=PLAN)
    memory_store.set_job("j1", status)
    set_stage(memory_store, "fetch", StageStatus.FAILED if status == JobStatus.FAILED else StageStatus.CANCELLED)
    set_stage(memory_store, "notify", StageStatus.PENDING, enqueued_at=0.0)
    assert stuck(memory_store, now=1e12) == "notify"
    set_stage(memory_store, "notify", StageStatus.FAILED)  # the callback was dead-lettered: nothing more to do
    assert stuck(memory_store, now=1e12) is None


def test_a_finished_job_without_notify_is_never_stuck(memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=("fetch", "parse"))
    memory_store.set_job("j1", JobStatus.FAILED)
    set_stage(memory_store, "fetch", StageStatus.FAILED, enqueued_at=0.0)
    assert stuck(memory_store, now=1e12) is None


def test_waiting_with_only_a_dead_workers_message_is_stuck_at_once(memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=PLAN)
    set_stage(memory_store, "fetch", StageStatus.DONE)
    set_stage(memory_store, "parse", StageStatus.QUEUED, enqueued_at=100.0)
    # Well inside the grace period: the message exists, and nobody alive holds it.
    assert stuck(memory_store, now=100.0, orphaned=frozenset({"parse"})) == "parse"
    # A live copy of it (a duplicate, or the message given back): that one will run.
    assert stuck(memory_store, now=100.0, in_broker=frozenset({"parse"}), orphaned=frozenset({"parse"})) is None


def test_a_dead_workers_message_waits_for_the_lease_of_a_stage_that_runs(memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=PLAN)
    memory_store.set_job("j1", JobStatus.RUNNING)
    set_stage(memory_store, "fetch", StageStatus.RUNNING, enqueued_at=0.0)
    memory_store.acquire_lease("j1", "fetch", 3)
    assert stuck(memory_store, now=1e12, orphaned=frozenset({"fetch"})) is None


def test_batch_messages_do_not_stand_for_their_stages_own(memory_store: MemoryJobStore) -> None:
    make_job(memory_store, stages=PLAN)
    set_stage(memory_store, "fetch", StageStatus.DONE)
    set_stage(memory_store, "parse", StageStatus.QUEUED, enqueued_at=100.0)
    # Its batches wait in the queue, but the coordinating task (progress, assembling) is gone with its worker.
    assert stuck(memory_store, now=100.0, orphaned=frozenset({"parse"}), batches_of=frozenset({"parse"})) == "parse"
    assert stuck(memory_store, now=100.0 + GRACE_S, batches_of=frozenset({"parse"})) == "parse"


@pytest.mark.parametrize(("pttl_ms", "expected"), [(2000, 2.05), (60_000, 5.0), (-2, 0.05), (-1, 5.0), (0, 0.05)])
def test_a_reconciler_that_missed_the_lock_tries_again_once_it_runs_out(pttl_ms: int, expected: float) -> None:
    assert lock_wait_s(pttl_ms, interval=5.0) == pytest.approx(expected)
