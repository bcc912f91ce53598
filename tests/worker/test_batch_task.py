"""The batch task's bookkeeping of runs that die under it: on the in-memory store, and on a real Redis with the
runs' processes killed."""

from __future__ import annotations

import multiprocessing
import signal
import time
from pathlib import Path

import pytest

from pipeline.errors import PermanentError, TransientError
from pipeline.models import JobSpec
from pipeline.settings import Settings
from pipeline.stages.context import BatchContext
from pipeline.stores.jobs_memory import MemoryJobStore
from pipeline.stores.jobs_redis import RedisJobStore
from pipeline.stores.keys import lease_holder
from tests.worker.in_memory import make_job, memory_app
from worker.batch_task import BatchTask
from worker.repobuild_app import RepobuildCelery
from worker.stage_task import BATCH_TASK

MAX_RETRIES = 2


def test_a_batch_that_kills_its_process_every_time_is_failed_naming_it(tmp_path: Path,
                                                                      memory_store: MemoryJobStore) -> None:
    app = memory_app(tmp_path, memory_store, max_retries=MAX_RETRIES)
    task: BatchTask = app.tasks[BATCH_TASK]
    make_job(memory_store, stages=("embed_images", "notify"))
    calls: list[int] = []

    def batch(ctx: BatchContext, n: int) -> None:
        calls.append(n)
        if n == 2:
            raise TransientError("busy")

    task.batch_functions = {"embed_images": batch}
    batches = memory_store.batches("j1", "embed_images")
    # runs that end in the task's hands, done or failed, are never counted as lost
    assert task.execute("j1", "embed_images", 0) == "done"
    for _ in range(MAX_RETRIES + 1):
        with pytest.raises(TransientError):
            task.execute("j1", "embed_images", 2)
    assert batches.lost_runs(0) == batches.lost_runs(2) == 0
    # what a process killed mid-batch leaves behind: a run started that never ended (an in-process test
    # cannot die, so the deaths are written as the dying process leaves them)
    for _ in range(MAX_RETRIES):
        batches.mark_started(1)
    assert batches.lost_runs(1) == MAX_RETRIES
    with pytest.raises(PermanentError, match=r"^embed_images batch 1: its process died 2 times in a row"):
        task.execute("j1", "embed_images", 1)
    assert 1 not in calls  # not run again


def test_a_batch_whose_process_dies_on_an_input_is_failed_naming_that_input(
        settings: Settings, celery_app: RepobuildCelery, store: RedisJobStore) -> None:
    """On the real Redis store, each run of the poisoned batch in a process of its own, killed (SIGKILL) when it
    takes up the poisoned input, as the chaos tests' fault injection does: what the dead processes left in Redis
    must name the input, and the run after the last death fail the batch with that name."""
    settings = settings.with_(max_retries=MAX_RETRIES, lease_ttl_s=1.0, fault_kill_item="*/poisoned.md")
    celery_app.repobuild_settings = settings
    store.create(JobSpec(job_id="j1", task="process-all"), ("fetch", "parse", "notify"))
    task: BatchTask = celery_app.tasks[BATCH_TASK]
    inputs = {0: ["a/first.md", "a/second.md"], 1: ["b/first.md", "b/poisoned.md", "b/after.md"]}
    taken: list[str] = []

    def batch(ctx: BatchContext, n: int) -> None:
        for item in inputs[n]:
            ctx.working_on(item)
            taken.append(item)

    task.batch_functions = {"parse": batch}
    batches = store.batches("j1", "parse")
    assert task.execute("j1", "parse", 0) == "done"
    # a healthy run names its first input only (one write per batch, not one per input)
    assert batches.noted_item(0) == "a/first.md or an input after it"
    assert taken == inputs[0]
    fork = multiprocessing.get_context("fork")
    for death in range(1, MAX_RETRIES + 1):
        run = fork.Process(target=task.execute, args=("j1", "parse", 1))
        run.start()
        run.join(timeout=60)
        assert run.exitcode == -signal.SIGKILL
        assert batches.lost_runs(1) == death
        # the first run was a healthy one, the run after a death names each input: the last named is the poison
        assert batches.noted_item(1) == ("b/first.md or an input after it" if death == 1 else "b/poisoned.md")
        while store.lease_held("j1", lease_holder("parse", 1)):  # the dead run's lease, until it expires
            time.sleep(0.05)
    with pytest.raises(PermanentError, match=r"^parse batch 1: its process died 2 times in a row while on "
                                             r"b/poisoned\.md \(killed"):
        task.execute("j1", "parse", 1)
    assert taken == inputs[0]  # not run again in this process, and the children's work was their own
    assert batches.runs() == {0: 1, 1: MAX_RETRIES}
