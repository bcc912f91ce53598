"""The one retry helper of pipeline/: tenacity, set up the way every loop of ours needs it.

Most retrying is not done here. Each S3 request is retried by botocore (standard mode, configured in
pipeline/targets/s3_client.py), and a TransientError that escapes a stage is retried by its Celery task
with backoff and jitter (worker/). A loop of ours exists only for what neither covers: an API call whose
server says how long to wait (openai_retry.py), one file of an upload (targets/s3.py), a compare-and-swap
(targets/s3_pointer.py), a poll until something is ready (sources/github_template.py).

The convention is the same for all of them: the body raises TransientError, or the subclass named in `on`,
to ask for another go; anything else (a PermanentError above all) goes straight through; once the attempts
or the time are spent, the last error is raised as it is, so its message stays the caller's.
"""

from __future__ import annotations

import logging

import tenacity
from tenacity.stop import stop_base
from tenacity.wait import WaitBaseT, wait_base

from pipeline.errors import TransientError


def backoff(base_s: float, max_s: float) -> wait_base:
    """Exponential backoff with full jitter: uniform in [0, min(max_s, base_s * 2^(attempt-1))].

    Many workers hitting one limit spread out instead of retrying in step."""
    return tenacity.wait_full_jitter(multiplier=base_s, max=max_s)


def retrying(*, attempts: int | None = None, within_s: float | None = None, wait: WaitBaseT,
             on: type[BaseException] = TransientError, log: logging.Logger | None = None) -> tenacity.Retrying:
    """Calls (`retrying(...)(fn, *args)`) that retry while `fn` raises `on`, at most `attempts` times and not
    starting an attempt that would begin after `within_s` seconds; `log` gets a warning before each wait.

    `.statistics["attempt_number"]` says afterwards how many attempts were made.
    """
    stops: list[stop_base] = []
    if attempts is not None:
        stops.append(tenacity.stop_after_attempt(max(1, attempts)))
    if within_s is not None:
        stops.append(tenacity.stop_before_delay(within_s))
    if not stops:
        raise ValueError("a retry needs a bound: attempts, within_s or both")

    def warn(state: tenacity.RetryCallState) -> None:
        if log is not None and state.outcome is not None:
            of = f" of {attempts}" if attempts is not None else ""
            log.warning("%s; attempt %d%s, retrying in %.2fs", state.outcome.exception(), state.attempt_number,
                        of, state.upcoming_sleep)

    return tenacity.Retrying(stop=tenacity.stop_any(*stops), wait=wait, retry=tenacity.retry_if_exception_type(on),
                             reraise=True, before_sleep=warn)


__all__ = ["backoff", "retrying"]
