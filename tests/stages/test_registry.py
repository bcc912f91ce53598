"""Pure tier: every stage a plan names is registered once, has its Celery task and is routed to a queue."""

from __future__ import annotations

from pathlib import Path

from pipeline.plans import PLANS
from pipeline.settings import Settings
from pipeline.stages.registry import STAGES
from worker.factory import create_celery
from worker.queues import QUEUE_CPU, QUEUES
from worker.stage_task import BATCH_TASK


def test_every_planned_stage_has_a_task_and_a_queue(tmp_path: Path) -> None:
    # Building the app connects to nothing: the broker URL is only read when a message is sent.
    app = create_celery(Settings(redis_url="redis://127.0.0.1:1/0", artifacts=str(tmp_path)))
    routes = app.conf.task_routes
    names = [s.name for s in STAGES]
    assert len(names) == len(set(names))
    for task, stages in PLANS.items():
        for stage in stages:
            assert stage in names, f"{task}: stage {stage} is not in STAGES"
            assert f"repobuild.{stage}" in app.tasks
            assert routes[f"repobuild.{stage}"]["queue"] in QUEUES
    assert BATCH_TASK in app.tasks and routes[BATCH_TASK]["queue"] == QUEUE_CPU
    fanned = {s.name for s in STAGES if s.batch is not None}
    assert fanned == set(app.tasks[BATCH_TASK].batch_functions)
