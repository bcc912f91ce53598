"""gunicorn's configuration for the API: `gunicorn --config python:api.gunicorn_conf 'api.app:create_app()'`.

A module rather than a file beside the image's working directory, so the same command runs in the image, in
compose, in k8s/ and in the tests. Worker processes: gunicorn's own `WEB_CONCURRENCY` (the image sets 2); each
is a gthread worker whose threads serve requests, so a server-sent events stream (`GET /jobs/<id>/events`, up to
REPOBUILD_EVENTS_STREAM_MAX_S) holds one thread, not a whole process.

Prometheus: every gunicorn worker is a process of its own, so the API's metrics use prometheus_client's
multiprocess mode. The directory is made fresh here before any worker starts (metrics of an earlier run must not be
summed in), handed to the workers through PROMETHEUS_MULTIPROC_DIR, and the files of a worker that exits are marked
dead so its gauges leave the sum. An operator who sets PROMETHEUS_MULTIPROC_DIR keeps that folder (and empties it).

Logs: with REPOBUILD_LOG_FORMAT=json, gunicorn's own lines (its error log and the access log, one line a request)
are JSON too, through the same formatter as the app's, so a request about a job carries its job_id.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline.settings import Settings

_SETTINGS = Settings.from_env()
bind = [f"0.0.0.0:{_SETTINGS.port}"]
worker_class = "gthread"
threads = 8
# a gthread worker's heartbeat comes from its main thread, so a long request does not count against this
timeout = 60
# SIGTERM: stop accepting, let requests in flight finish this long (below k8s' terminationGracePeriodSeconds)
graceful_timeout = 25
keepalive = 5
# the workers' heartbeat files on tmpfs: an overlay or network disk can stall them (gunicorn's Docker advice)
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
accesslog = "-"
errorlog = "-"
# after the fork, so each worker opens its own Redis and S3 connections
preload_app = False

_METRICS_DIR: list[str] = []


def on_starting(server: Any) -> None:
    if _SETTINGS.prometheus_multiproc_dir:
        return  # the operator's folder; they keep it empty between starts
    Path(_SETTINGS.temp_dir).mkdir(parents=True, exist_ok=True)
    metrics_dir = tempfile.mkdtemp(prefix="repobuild-api-metrics-", dir=_SETTINGS.temp_dir)
    _METRICS_DIR.append(metrics_dir)
    # before any worker imports prometheus_client, which picks multiprocess values when this is set
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir


def post_worker_init(worker: Any) -> None:
    # Everything the app made at start (Celery, kombu, pydantic and Flask objects: ~180,000 of them) out of the
    # garbage collector's view. Left in, each full collection walks them all and stops the worker for ~110 ms,
    # a few times a minute at 500 requests/s: the slowest 1 % of requests was that pause (benchmarks P5).
    gc.freeze()


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess  # noqa: PLC0415 - only once the directory is in the environment

    folder = _SETTINGS.prometheus_multiproc_dir or (_METRICS_DIR[0] if _METRICS_DIR else None)
    if folder:
        multiprocess.mark_process_dead(worker.pid, folder)


def on_exit(server: Any) -> None:
    for metrics_dir in _METRICS_DIR:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _json_logging() -> dict[str, Any]:
    handler = {"class": "logging.StreamHandler", "formatter": "json", "filters": ["context"],
               "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "pipeline.log_lines.JsonFormatter"}},
        "filters": {"context": {"()": "pipeline.log_lines.ContextFilter"}},
        "handlers": {"stderr": handler},
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {name: {"level": "INFO", "handlers": ["stderr"], "propagate": False, "qualname": name}
                    for name in ("gunicorn.error", "gunicorn.access")},
    }


if _SETTINGS.log_format == "json":
    logconfig_dict = _json_logging()
