"""Tier 2: a pool process that dies without cleaning up (kill -9) leaves its live gauge in PROMETHEUS_MULTIPROC_DIR;
the worker forgets it when the next pool process starts, and keeps the counters of the work it did."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, multiprocess

from pipeline.settings import Settings
from tests.conftest import ROOT
from worker.metrics_server import forget_dead_processes

pytestmark = pytest.mark.integration

DIES_MID_TASK = """
import os
from worker import metrics
metrics.TASKS_RUNNING.labels("batch").inc()
metrics.BATCHES.labels("embed_text").inc()
print(os.getpid())
os._exit(0)  # no shutdown signal, as under kill -9
"""


def read(folder: Path) -> dict[str, float]:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))
    return {s.name: s.value for family in registry.collect() for s in family.samples}


def test_a_dead_pool_process_stops_counting_as_running_but_its_work_still_counts(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    pid = int(subprocess.run([sys.executable, "-c", DIES_MID_TASK], env=env, cwd=ROOT, capture_output=True, text=True,
                             check=True, timeout=60).stdout)
    before = read(tmp_path)
    assert (before["repobuild_tasks_running"], before["repobuild_batches_total"]) == (1.0, 1.0)
    settings = Settings(prometheus_multiproc_dir=str(tmp_path))
    assert forget_dead_processes(settings) == [pid]
    after = read(tmp_path)
    assert after.get("repobuild_tasks_running", 0.0) == 0.0 and after["repobuild_batches_total"] == 1.0
    assert forget_dead_processes(settings) == []  # nothing left to forget; a live process is never forgotten
