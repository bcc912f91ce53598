"""The one retry policy for calls to an OpenAI-compatible API (embeddings, chat completions).

Clients are built with the SDK's own retries off (`max_retries=0`) so that this module alone decides:
a bounded number of attempts that the final error can name, exponential backoff with full jitter,
a server's `Retry-After` / `retry-after-ms` honoured up to a cap, and the pipeline's error hierarchy
(TransientError for what may pass, PermanentError for what will not) instead of the SDK's exceptions.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import openai

from pipeline.errors import PermanentError, TransientError
from pipeline.http.backoff import full_jitter

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


def backoff_s(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    return full_jitter(attempt, policy.base_delay_s, policy.max_delay_s, rng)


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
                    secrets: Iterable[str] = (), sleep: Callable[[float], None] = time.sleep,
                    rng: random.Random | None = None) -> T:
    """`call()` until it succeeds, retrying 408/409/429/5xx, timeouts and connection errors.

    `what` names the request in every error ("embeddings batch 3 of 5 (inputs 4096-6143)"), so a failed
    job says which call gave up. Other 4xx raise PermanentError with the server's message at once.
    """
    policy = policy or RetryPolicy()
    rng = rng or random.Random()
    hidden = list(secrets)
    attempts = max(1, policy.max_attempts)
    for attempt in range(1, attempts + 1):
        wait: float | None = None
        try:
            return call()
        except openai.APIStatusError as exc:
            status = exc.status_code
            detail = mask(server_message(exc), hidden)
            if not is_retryable_status(status):
                raise PermanentError(f"{what}: HTTP {status}: {detail}") from exc
            problem = f"HTTP {status} ({detail})"
            wait = retry_after_s(exc.response.headers)
            error: Exception = exc
        except openai.APITimeoutError as exc:
            problem, error = "request timed out", exc
        except openai.APIConnectionError as exc:
            cause = exc.__cause__
            problem = mask(f"connection error ({cause or exc})", hidden)
            error = exc
        if attempt == attempts:
            raise TransientError(f"{what}: {problem} after {attempts} attempts") from error
        delay = min(wait, policy.max_retry_after_s) if wait is not None else backoff_s(attempt, policy, rng)
        log.warning("%s: %s; attempt %d of %d, retrying in %.2fs", what, problem, attempt, attempts, delay)
        sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")
