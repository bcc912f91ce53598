"""Worker entry point: `celery -A worker.app worker` (what `repobuild worker` runs)."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready, worker_shutting_down

from pipeline.settings import Settings
from worker.factory import create_celery
from worker.reconciler import Reconciler

app = create_celery(Settings.from_env())
_reconciler: list[Reconciler] = []


@worker_ready.connect
def _start_reconciler(sender: Any = None, **_: Any) -> None:
    rec = Reconciler(app)
    rec.start()
    _reconciler.append(rec)


@worker_shutting_down.connect
def _stop_reconciler(**_: Any) -> None:
    for rec in _reconciler:
        rec.stop()
