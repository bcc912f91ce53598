"""One thin Celery task per entry of pipeline.stages.registry.STAGES, and the batch task of those that fan out.

The policy is in stage_task.StageTask and batch_task.BatchTask; the work is in pipeline.stages."""

from __future__ import annotations

from typing import Any

from pipeline.stages.registry import STAGES
from worker.batch_task import BatchTask
from worker.stage_task import BATCH_TASK, RETRYABLE, StageFn, StageTask


def register(app: Any) -> None:
    settings = app.repobuild_settings
    for stage in STAGES:
        _register_stage(app, stage.name, stage.run, settings.max_retries, settings.retry_backoff_max_s)

    def batch_task(self: BatchTask, job_id: str, stage: str, n: int) -> str:
        return self.execute(job_id, stage, n)

    batch_functions = {s.name: s.batch for s in STAGES if s.batch is not None}
    app.task(base=BatchTask, bind=True, shared=False, name=BATCH_TASK, batch_functions=batch_functions,
             autoretry_for=RETRYABLE, max_retries=settings.max_retries,
             retry_backoff_max=settings.retry_backoff_max_s)(batch_task)


def _register_stage(app: Any, stage: str, fn: StageFn, max_retries: int, backoff_max: int) -> None:
    def stage_task(self: StageTask, job_id: str, continuation: bool = False) -> str:
        return self.execute(job_id, fn, continuation)

    stage_task.__name__ = f"{stage}_task"
    app.task(base=StageTask, bind=True, shared=False, name=f"repobuild.{stage}", stage_name=stage,
             max_retries=max_retries, retry_backoff_max=backoff_max)(stage_task)
