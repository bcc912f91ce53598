"""How log lines look: human-readable by default, one JSON object a line with REPOBUILD_LOG_FORMAT=json.

Every line carries the job it is about: `job_id`, `stage`, `attempt` and `task_id` come from a context the
worker's tasks (and the API's requests) set around their work, so a line logged deep inside a stage or a library
has them too; a line about no job (a worker starting) has them as null. Stdlib logging only: the handlers the
worker (Celery) or the server (gunicorn, werkzeug) set up stay theirs, they get a filter and a formatter.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

FIELDS = ("job_id", "stage", "attempt", "task_id")
_context: ContextVar[Mapping[str, Any] | None] = ContextVar("repobuild_log_context", default=None)


def _current() -> Mapping[str, Any]:
    return _context.get() or {}


def add_log_fields(**fields: Any) -> None:
    """Add to the current context (e.g. the attempt, once the task knows it)."""
    _context.set({**_current(), **fields})


def start_log_context(**fields: Any) -> None:
    """Replace the current context: for a thread that goes on to unrelated work (a server's next request)."""
    _context.set(dict(fields))


class ContextFilter(logging.Filter):
    """Puts the context's fields on every record; a field given in `extra=` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _current()
        for name in FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, context.get(name))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, the four context fields, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **{name: getattr(record, name, None) for name in FIELDS},
            "process": record.processName,
            "pid": record.process,
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def apply_log_format(log_format: str, handlers: Iterable[logging.Handler]) -> None:
    """Give these handlers the context filter and, for `json`, the JSON formatter. Idempotent."""
    for handler in handlers:
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())
        if log_format == "json" and not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(JsonFormatter())


def log_to_stderr(log_format: str) -> None:
    """For a process whose server sets up no logging of its own (the API): JSON lines to stderr when asked.

    Text stays as the server has it (werkzeug's and Flask's own handlers)."""
    if log_format != "json":
        return
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)  # so the request lines werkzeug logs at INFO are written
    apply_log_format(log_format, root.handlers)
