"""pipeline.http.retry, the one retry helper of pipeline/: what it retries, how often, what it raises at the end.

Its users are tested against real servers (the OpenAI-compatible fake, SeaweedFS, the git server); these
pin the conventions they all rely on.
"""

from __future__ import annotations

import time

import pytest
import tenacity

from pipeline.errors import PermanentError, TransientError
from pipeline.http.retry import backoff, retrying


class Calls:
    """A body that fails with the given errors in turn, then returns how many calls it took."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.count = 0

    def __call__(self) -> int:
        self.count += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.count


def test_transient_errors_are_retried_until_the_body_succeeds() -> None:
    body = Calls(TransientError("busy"), TransientError("busy"))
    tries = retrying(attempts=3, wait=backoff(0.001, 0.01))
    assert tries(body) == 3
    assert tries.statistics["attempt_number"] == 3


def test_the_last_transient_error_is_raised_as_it_is_once_the_attempts_are_spent() -> None:
    body = Calls(*(TransientError(f"busy {n}") for n in range(1, 5)))
    tries = retrying(attempts=3, wait=backoff(0.001, 0.01))
    with pytest.raises(TransientError, match="^busy 3$"):
        tries(body)
    assert body.count == 3 and tries.statistics["attempt_number"] == 3


def test_anything_else_goes_through_at_once() -> None:
    body = Calls(TransientError("busy"), PermanentError("refused"))
    with pytest.raises(PermanentError, match="refused"):
        retrying(attempts=5, wait=backoff(0.001, 0.01))(body)
    assert body.count == 2

    class Contended(TransientError):
        pass

    # `on` narrows what is retried: another TransientError is the caller's to handle (a stage retry).
    body = Calls(Contended("again"), TransientError("S3 is down"))
    with pytest.raises(TransientError, match="S3 is down"):
        retrying(attempts=5, wait=backoff(0.001, 0.01), on=Contended)(body)
    assert body.count == 2


def test_within_s_starts_no_attempt_past_the_limit() -> None:
    body = Calls(*(TransientError("not yet") for _ in range(100)))
    started = time.monotonic()
    with pytest.raises(TransientError, match="not yet"):
        retrying(within_s=1.0, wait=tenacity.wait_fixed(0.25))(body)
    assert time.monotonic() - started < 1.0
    assert 2 <= body.count <= 4


def test_a_retry_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="bound"):
        retrying(wait=backoff(0.001, 0.01))
