"""The worker's Prometheus exporter: one HTTP server in the worker's main process (REPOBUILD_METRICS_PORT).

The tasks run in prefork pool processes; each writes its metrics to PROMETHEUS_MULTIPROC_DIR, and the main
process's server adds them up at every scrape (prometheus-client's multiprocess mode). Without that folder the
server can only show the main process's own metrics (the reconciler's), which is right for `--pool solo` or
threads only, so the worker says so at start. The queue depths are the API's to report (api/routes/metrics.py):
every worker reporting the same Redis lists would count them once per worker.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server

from pipeline.settings import Settings

log = logging.getLogger("repobuild.worker")
_LIVE_FILE = re.compile(r"gauge_live\w*_(\d+)\.db$")


def registry_of(settings: Settings) -> CollectorRegistry:
    """What a scrape reads: every process's files in multiprocess mode, else this process's registry."""
    if not settings.prometheus_multiproc_dir:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=settings.prometheus_multiproc_dir)
    return registry


def forget_dead_processes(settings: Settings) -> list[int]:
    """Drop the live gauges of processes that are gone (a pool process killed, a worker restarted on the same
    folder), so `repobuild_tasks_running` does not count their last tasks forever. Their counters stay: the
    work they did happened."""
    folder = settings.prometheus_multiproc_dir
    if not folder:
        return []
    dead: set[int] = set()
    for path in glob.glob(os.path.join(folder, "gauge_live*_*.db")):
        match = _LIVE_FILE.search(path)
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, folder)
    return sorted(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process with that pid: not ours to forget
        return True
    return True


def start_exporter(settings: Settings, pool: str) -> Any:
    """Serve /metrics on the configured port; a port already taken is logged, never a failed worker start."""
    if not settings.metrics_port:
        return None
    if not settings.prometheus_multiproc_dir and pool == "prefork":
        log.warning("metrics: PROMETHEUS_MULTIPROC_DIR is not set, so the metrics of the pool processes (every "
                    "task's) cannot be exported; set it to an empty folder")
    forget_dead_processes(settings)
    try:
        server, _thread = start_http_server(settings.metrics_port, settings.metrics_host,
                                            registry=registry_of(settings))
    except OSError as exc:
        log.warning("metrics: cannot serve on %s:%s: %s", settings.metrics_host, settings.metrics_port, exc)
        return None
    log.info("metrics: serving on http://%s:%s/metrics", settings.metrics_host, settings.metrics_port)
    return server


def process_exited(settings: Settings) -> None:
    """A pool process is shutting down: its live gauges go with it."""
    if settings.prometheus_multiproc_dir:
        multiprocess.mark_process_dead(os.getpid(), settings.prometheus_multiproc_dir)
