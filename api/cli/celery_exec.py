"""`repobuild worker` and `repobuild flower`: Celery itself, by exec, so signals from the supervisor reach it.

Celery as the container's PID 1 takes SIGTERM as a warm shutdown: it stops consuming, lets the running tasks finish
(acks_late: a task cut short by SIGKILL is redelivered), then exits.
"""

from __future__ import annotations

import os
import sys

from worker.queues import QUEUES


def celery_argv(command: str, rest: list[str], quiet: bool = False) -> list[str]:
    # quiet: no banner lines between JSON log lines
    argv = [sys.executable, "-m", "celery", *(["--quiet"] if quiet else []), "-A", "worker.app", command, *rest]
    if command == "worker" and not any(a == "-Q" or a.startswith(("-Q", "--queues")) for a in rest):
        argv += ["-Q", ",".join(QUEUES)]  # both queues unless told which
    return argv


def exec_celery(command: str, rest: list[str]) -> int:
    """Flower's /api answers 401 unless FLOWER_BASIC_AUTH=user:pass (or --basic-auth) is given."""
    from pipeline.settings import Settings  # noqa: PLC0415 - the settings alone, not the pipeline

    os.execv(sys.executable, celery_argv(command, rest, quiet=Settings.from_env().log_format == "json"))
    return 0  # not reached: exec replaced this process
