"""One error hierarchy for the whole pipeline.

The base task maps these to Celery's retry policy in one place (worker/stage_task.py):
TransientError is retried with backoff, PermanentError fails the stage and the job at once,
ItemError never leaves a stage: the stage records it as an issue and goes on with the next item.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""


class TransientError(PipelineError):
    """Worth retrying: a network blip, a 5xx, a busy server. `retry_after_s`: how long the server asked to be left
    alone (Retry-After), which the task's retry waits at least, instead of its own shorter backoff."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StorageFull(TransientError):
    """No space left where a stage writes (ENOSPC, EDQUOT). Retried with backoff like any transient error, since
    space comes back (an operator frees or grows the volume, old jobs' artifacts are removed); once the retries run
    out the stage is dead-lettered with this message, naming what could not be written, and
    `POST /jobs/<id>/retry` resumes it from its cursor. Never an item's fault: no post or image is skipped for it."""


class PermanentError(PipelineError):
    """Retrying cannot help: bad input, missing repository, refused credentials."""


class ItemError(PipelineError):
    """One post or media file is bad; it is skipped and recorded, the job goes on."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class JobCancelled(PipelineError):
    """The job was cancelled; the stage stops between batches."""


class LeaseLost(PipelineError):
    """Another worker owns this stage now; whatever we hold is stale and must not be written."""


class UnknownTask(PermanentError):
    def __init__(self, task: str) -> None:
        # The original service's exact wording; clients match on it.
        super().__init__(f"Unknown task type: {task}")
        self.task = task
