"""One thin Celery task per stage. What runs around a stage is stage_task.StageTask, the retry policy
policy.task_options; the work is in pipeline.stages."""

from __future__ import annotations

from typing import Any

from pipeline.plans import NOTIFY
from pipeline.stages import (
    build_db,
    embed_images,
    embed_text,
    enrich,
    existing,
    fetch,
    parse,
    publish,
    source,
    upload,
)
from pipeline.stages.context import BatchFn
from worker.batch_task import BatchTask
from worker.notifications import run_notify
from worker.policy import task_options
from worker.stage_task import BATCH_TASK, StageFn, StageTask

STAGE_FUNCTIONS: dict[str, StageFn] = {
    "source": source.run,
    "fetch": fetch.run,
    "existing": existing.run,
    "parse": parse.run,
    "embed_text": embed_text.run,
    "embed_images": embed_images.run,
    "build_db": build_db.run,
    "enrich": enrich.run,
    "publish": publish.run,
    "upload": upload.run,
    NOTIFY: run_notify,
}


BATCH_FUNCTIONS: dict[str, BatchFn] = {
    "embed_text": embed_text.run_batch,
    "embed_images": embed_images.run_batch,
}


def register(app: Any) -> None:
    options = task_options(app.repobuild_settings)
    for stage, fn in STAGE_FUNCTIONS.items():
        _register_stage(app, stage, fn, options)

    def batch_task(self: BatchTask, job_id: str, stage: str, n: int) -> str:
        return self.execute(job_id, stage, n)

    app.task(base=BatchTask, bind=True, shared=False, name=BATCH_TASK, batch_functions=BATCH_FUNCTIONS,
             **options)(batch_task)


def _register_stage(app: Any, stage: str, fn: StageFn, options: dict[str, Any]) -> None:
    def stage_task(self: StageTask, job_id: str, continuation: bool = False) -> str:
        return self.execute(job_id, fn, continuation)

    stage_task.__name__ = f"{stage}_task"
    app.task(base=StageTask, bind=True, shared=False, name=f"repobuild.{stage}", stage_name=stage,
             **options)(stage_task)
