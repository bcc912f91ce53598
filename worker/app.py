"""Worker entry point: `celery -A worker.app worker` (what `repobuild worker` runs)."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    worker_process_init,
    worker_ready,
    worker_shutting_down,
)

from pipeline.http.credentials import keep_credentials_out_of_logs
from pipeline.settings import Settings
from worker.factory import create_celery
from worker.parent_death import die_with_parent
from worker.reconciler import Reconciler

keep_credentials_out_of_logs()
app = create_celery(Settings.from_env())
_reconciler: list[Reconciler] = []
_MAIN_PID = os.getpid()  # imported before the pool forks: in a pool process, this is its parent


@after_setup_logger.connect
@after_setup_task_logger.connect
def _mask_credentials(logger: logging.Logger, **_: Any) -> None:
    keep_credentials_out_of_logs(logger.handlers)


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
