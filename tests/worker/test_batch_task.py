"""The batch task's bookkeeping of runs that die under it, on the in-memory store: no Redis, no worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import PermanentError, TransientError
from pipeline.stages.context import BatchContext
from pipeline.stores.jobs_memory import MemoryJobStore
from tests.worker.in_memory import make_job, memory_app
from worker.batch_task import BatchTask
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
