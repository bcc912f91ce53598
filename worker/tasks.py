"""One thin Celery task per stage. The policy is in base.StageTask; the work is in pipeline.stages."""

from __future__ import annotations

from typing import Any

from pipeline.plans import NOTIFY
from pipeline.stages import build_db, fetch, parse, publish
from worker.base import StageFn, StageTask
from worker.notifications import run_notify

STAGE_FUNCTIONS: dict[str, StageFn] = {
    "fetch": fetch.run,
    "parse": parse.run,
    "build_db": build_db.run,
    "publish": publish.run,
    NOTIFY: run_notify,
}


def register(app: Any) -> None:
    settings = app.repobuild_settings
    for stage, fn in STAGE_FUNCTIONS.items():
        _register_stage(app, stage, fn, settings.max_retries, settings.retry_backoff_max_s)


def _register_stage(app: Any, stage: str, fn: StageFn, max_retries: int, backoff_max: int) -> None:
    def stage_task(self: StageTask, job_id: str, continuation: bool = False) -> str:
        return self.execute(job_id, fn, continuation)

    stage_task.__name__ = f"{stage}_task"
    app.task(base=StageTask, bind=True, name=f"repobuild.{stage}", stage_name=stage,
             max_retries=max_retries, retry_backoff_max=backoff_max)(stage_task)
