"""Worker entry point: `celery -A worker.app worker` (what `repobuild worker` runs)."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutting_down,
)

from pipeline.http.credentials import keep_credentials_out_of_logs
from pipeline.log_lines import apply_log_format, start_log_context
from pipeline.settings import Settings
from worker import metrics_server
from worker.factory import create_celery
from worker.parent_death import die_with_parent
from worker.reconciler import Reconciler

keep_credentials_out_of_logs()
app = create_celery(Settings.from_env())
_reconciler: list[Reconciler] = []
_MAIN_PID = os.getpid()  # imported before the pool forks: in a pool process, this is its parent


@after_setup_logger.connect
@after_setup_task_logger.connect
def _set_up_logs(logger: logging.Logger, **_: Any) -> None:
    keep_credentials_out_of_logs(logger.handlers)
    apply_log_format(app.repobuild_settings.log_format, logger.handlers)


@task_prerun.connect
def _log_fields(task_id: str = "", task: Any = None, args: tuple[Any, ...] = (), **_: Any) -> None:
    # Every line while a task runs, Celery's own "succeeded" or "retry" included, says which job and stage.
    fields = task.log_fields(tuple(args)) if hasattr(task, "log_fields") else {}
    start_log_context(task_id=task_id, **fields)


@task_postrun.connect
def _end_log_fields(**_: Any) -> None:
    start_log_context()


@worker_init.connect
def _start_metrics(sender: Any = None, **_: Any) -> None:
    # worker_init runs in the main process before the pool forks: one exporter per worker, not per process.
    pool = getattr(getattr(sender, "pool_cls", None), "__module__", "") or ""
    metrics_server.start_exporter(app.repobuild_settings, "prefork" if pool.endswith("prefork") else pool)


@worker_process_init.connect
def _forget_dead_processes(**_: Any) -> None:
    # A pool process starts, often in place of one that died (kill -9 leaves no chance to clean up).
    metrics_server.forget_dead_processes(app.repobuild_settings)


@worker_process_shutdown.connect
def _process_exited(**_: Any) -> None:
    metrics_server.process_exited(app.repobuild_settings)


@worker_process_init.connect
def _pool_process_dies_with_worker(**_: Any) -> None:
    # A pool process left running by a main process killed with -9 would go on with a task whose message is
    # redelivered elsewhere. The solo pool sends this signal in the main process itself: that one keeps its life.
    if os.getpid() != _MAIN_PID:
        die_with_parent(_MAIN_PID)


@worker_ready.connect
def _start_reconciler(sender: Any = None, **_: Any) -> None:
    rec = Reconciler(app)
    rec.start()
    _reconciler.append(rec)


@worker_shutting_down.connect
def _stop_reconciler(**_: Any) -> None:
    for rec in _reconciler:
        rec.stop()
