"""What is retried and how, what a dead-lettered stage says, and how messages are acknowledged —
defined once, for the stage tasks and the batch task alike (STYLE: policy lives outside task code).

The task classes apply it at run time (which errors to record as a retry, the failure message);
registration applies the Celery options (`task_options`), so every task carries the same policy.
"""

from __future__ import annotations

from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded

from pipeline.errors import PermanentError, TransientError
from pipeline.settings import Settings

# Worth another try later; anything else is a bug or bad input and fails the stage at once.
RETRYABLE: tuple[type[BaseException], ...] = (
    TransientError,
    SoftTimeLimitExceeded,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
NEVER_RETRIED: tuple[type[BaseException], ...] = (PermanentError,)

# A message is acked only after its task finished, and requeued if the process running it dies, so no
# stage or batch is lost with a worker. The app applies the same as its default for any other task.
DELIVERY: dict[str, bool] = {"acks_late": True, "reject_on_worker_lost": True}


def task_options(settings: Settings) -> dict[str, Any]:
    """The Celery options of every repobuild task: delivery, and retries of RETRYABLE errors with
    exponential backoff and full jitter (a countdown uniform in [0, min(cap, 2**n)]), up to
    `max_retries` times; after that the task fails and its `on_failure` dead-letters it."""
    return {
        **DELIVERY,
        "autoretry_for": RETRYABLE,
        "dont_autoretry_for": NEVER_RETRIED,
        "retry_backoff": True,
        "retry_jitter": True,
        "retry_backoff_max": settings.retry_backoff_max_s,
        "max_retries": settings.max_retries,
    }


class HonoursRetryAfter:
    """A task mixin: a retry waits at least the Retry-After its TransientError carries (capped at the task's
    `retry_backoff_max`), not only Celery's backoff, which is short on the first retries: a rate-limited server
    asked again within a second answers 429 again and uses up a retry for nothing."""

    retry_backoff_max: int = 600

    def retry(self, args: Any = None, kwargs: Any = None, exc: BaseException | None = None, throw: bool = True,
              eta: Any = None, countdown: float | None = None, max_retries: int | None = None,
              **options: Any) -> Any:
        asked = getattr(exc, "retry_after_s", None) if isinstance(exc, TransientError) else None
        if asked is not None and eta is None:
            countdown = max(countdown or 0.0, min(float(asked), float(self.retry_backoff_max)))
        return super().retry(args, kwargs, exc, throw, eta, countdown,  # type: ignore[misc]
                             max_retries, **options)


def app_defaults() -> dict[str, bool]:
    """DELIVERY as the app's defaults (`task_acks_late`, ...), for tasks registered without task_options."""
    return {f"task_{name}": value for name, value in DELIVERY.items()}


def failure_message(exc: BaseException) -> str:
    """What a failed stage or batch reports: a PermanentError's own words (written for the user),
    anything else with its type, which is the useful part of an unexpected error."""
    return str(exc) if isinstance(exc, PermanentError) else f"{type(exc).__name__}: {exc}"


def died_message(lost: int, where: str) -> str:
    """The dead-letter of a stage or batch whose process died `lost` runs in a row, `where` (" while on X")."""
    return (f"its process died {lost} times in a row{where} (killed, out of memory or crashed, each time without a "
            "word); dead-lettered instead of redelivered")
