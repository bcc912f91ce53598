"""gunicorn settings that go with repobuild's metrics and logs: `gunicorn -c python:api.gunicorn_hooks ...`.

- child_exit: a gunicorn worker that exits (or was killed) leaves its live gauges behind in
  PROMETHEUS_MULTIPROC_DIR; prometheus-client is told the process is dead so they stop counting.
- With REPOBUILD_LOG_FORMAT=json, gunicorn's own lines (its error log and the access log, one line a request)
  are JSON too, through the same formatter as the app's, so a request about a job carries its job_id.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import multiprocess

from pipeline.settings import Settings

_settings = Settings.from_env()


def child_exit(server: Any, worker: Any) -> None:
    if _settings.prometheus_multiproc_dir:
        multiprocess.mark_process_dead(worker.pid, _settings.prometheus_multiproc_dir)


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


if _settings.log_format == "json":
    logconfig_dict = _json_logging()
