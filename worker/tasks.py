"""One thin Celery task per entry of pipeline.stages.registry.STAGES, and the batch task of those that fan out.

What runs around a stage is stage_task.StageTask (batch_task.BatchTask for a batch), the retry policy is
policy.task_options; the work is in pipeline.stages."""

from __future__ import annotations

from typing import Any

from pipeline.stages.registry import STAGES
from worker.batch_task import BatchTask
from worker.policy import task_options
from worker.stage_task import BATCH_TASK, StageFn, StageTask


def register(app: Any) -> None:
    options = task_options(app.repobuild_settings)
    for stage in STAGES:
        _register_stage(app, stage.name, stage.run, options)

    def batch_task(self: BatchTask, job_id: str, stage: str, n: int, sent_at: float | None = None) -> str:
        return self.execute(job_id, stage, n, sent_at)

    batch_functions = {s.name: s.batch for s in STAGES if s.batch is not None}
    app.task(base=BatchTask, bind=True, shared=False, name=BATCH_TASK, batch_functions=batch_functions,
             **options)(batch_task)


def _register_stage(app: Any, stage: str, fn: StageFn, options: dict[str, Any]) -> None:
    def stage_task(self: StageTask, job_id: str, continuation: bool = False) -> str:
        return self.execute(job_id, fn, continuation)

    stage_task.__name__ = f"{stage}_task"
    app.task(base=StageTask, bind=True, shared=False, name=f"repobuild.{stage}", stage_name=stage,
             **options)(stage_task)
