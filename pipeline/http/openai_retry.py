"""The one retry policy for calls to an OpenAI-compatible API (embeddings, chat completions).

Clients are built with the SDK's own retries off (`max_retries=0`) so that this module alone decides,
through the retry helper of pipeline.http.retry: a bounded number of attempts that the final error can
name, exponential backoff with full jitter, a server's `Retry-After` / `retry-after-ms` honoured up to a
cap, and the pipeline's error hierarchy (TransientError for what may pass, PermanentError for what will
not) instead of the SDK's exceptions.
"""

from __future__ import annotations

import email.utils
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import openai
import tenacity

from pipeline.errors import PermanentError, TransientError
from pipeline.http.retry import backoff, retrying

T = TypeVar("T")
log = logging.getLogger("repobuild.openai")

MAX_MESSAGE_CHARS = 500


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    # A Retry-After longer than this is still waited for, but only this long: a stage must not stall for
    # an hour on a header, and the attempt count still bounds the total.
    max_retry_after_s: float = 60.0


def is_retryable_status(status: int) -> bool:
    # The SDK's own list: 408 and 409 (lock timeout) pass like 429 and 5xx do.
    return status in (408, 409, 429) or status >= 500


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait, from `retry-after-ms`, `retry-after` (seconds or HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = lowered.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) / divisor
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = lowered.get("retry-after")
    if raw:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None


class _Retryable(TransientError):
    """One failed attempt worth another; `retry_after_s` is how long the server asked us to wait, if it did."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _wait(policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], float]:
    """The server's Retry-After, capped at `max_retry_after_s`; without one, backoff with full jitter."""
    jitter = backoff(policy.base_delay_s, policy.max_delay_s)

    def wait(state: tenacity.RetryCallState) -> float:
        failed = state.outcome.exception() if state.outcome else None
        if isinstance(failed, _Retryable) and failed.retry_after_s is not None:
            return min(failed.retry_after_s, policy.max_retry_after_s)
        return jitter(state)
    return wait


def server_message(exc: openai.APIStatusError) -> str:
    """The server's own explanation: `error.message` of an OpenAI-shaped body, else the raw body."""
    body = exc.body
    text: str | None = None
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str) and message.strip():
            text = message.strip()
        elif isinstance(body.get("error"), str):
            text = str(body["error"]).strip()
    elif isinstance(body, str) and body.strip():
        text = body.strip()
    if not text:
        text = exc.message
    return text[:MAX_MESSAGE_CHARS]


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        # Placeholder keys like "unused" are not secrets, and masking short strings would mangle messages.
        if len(secret) >= 8:
            text = text.replace(secret, "***")
    return text


def call_with_retry(call: Callable[[], T], *, what: str, policy: RetryPolicy | None = None,
                    secrets: Iterable[str] = ()) -> T:
    """`call()` until it succeeds, retrying 408/409/429/5xx, timeouts and connection errors.

    `what` names the request in every error ("embeddings batch 3 of 5 (inputs 4096-6143)"), so a failed
    job says which call gave up. Other 4xx raise PermanentError with the server's message at once.
    """
    policy = policy or RetryPolicy()
    hidden = list(secrets)
    attempts = max(1, policy.max_attempts)

    def once() -> T:
        try:
            return call()
        except openai.APIStatusError as exc:
            status = exc.status_code
            detail = mask(server_message(exc), hidden)
            if not is_retryable_status(status):
                raise PermanentError(f"{what}: HTTP {status}: {detail}") from exc
            raise _Retryable(f"{what}: HTTP {status} ({detail})", retry_after_s(exc.response.headers)) from exc
        except openai.APITimeoutError as exc:
            raise _Retryable(f"{what}: request timed out") from exc
        except openai.APIConnectionError as exc:
            raise _Retryable(f"{what}: " + mask(f"connection error ({exc.__cause__ or exc})", hidden)) from exc

    try:
        return retrying(attempts=attempts, wait=_wait(policy), on=_Retryable, log=log)(once)
    except _Retryable as exc:
        raise TransientError(f"{exc} after {attempts} attempts", exc.retry_after_s) from exc.__cause__
