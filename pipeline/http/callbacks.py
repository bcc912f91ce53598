"""The original's callback payloads (CONTRACT §1), and one signed delivery attempt.

Retries are not here: `deliver` makes one attempt and says, through the error hierarchy, whether
another could help (TransientError) or not (PermanentError); the notify task's policy retries.
The body is serialised once, and those exact bytes are signed and sent, so a receiver can verify
`X-Repobuild-Signature` against the raw body and drop repeats by `X-Repobuild-Delivery`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from pipeline.errors import PermanentError, TransientError
from pipeline.http.address_policy import AddressPolicy, AddressRefused
from pipeline.http.pinned import http_client
from pipeline.models import JSON
from pipeline.timestamps import Timestamp, iso

SIGNATURE_HEADER = "X-Repobuild-Signature"
DELIVERY_HEADER = "X-Repobuild-Delivery"
# Refused for now, but the receiver asks to be tried again later.
_RETRYABLE_4XX = {408, 429}
_MIN_SECRET_LEN = 4  # shorter "secrets" would mangle ordinary words when masked


def _seconds(ts: Timestamp) -> float:
    return ts.timestamp() if isinstance(ts, datetime) else float(ts)


def log_entry(job_id: str, message: str, ts: Timestamp, error: bool = False) -> JSON:
    return {"type": "error" if error else "info", "jobId": job_id, "timestamp": iso(ts), "message": message}


def success_payload(job_id: str, result: JSON, started_at: Timestamp, finished_at: Timestamp,
                    logs: list[JSON]) -> JSON:
    duration_ms = max(0, round((_seconds(finished_at) - _seconds(started_at)) * 1000))
    return {"jobId": job_id, "status": "completed", "result": result, "processedAt": iso(finished_at),
            "duration": duration_ms, "logs": list(logs)}


def failure_payload(job_id: str, error: str, finished_at: Timestamp, logs: list[JSON]) -> JSON:
    return {"jobId": job_id, "status": "failed", "error": error, "processedAt": iso(finished_at),
            "logs": list(logs)}


def redact(value: Any, secrets: Iterable[str | None]) -> Any:
    """`value` with every occurrence of a secret in its strings (keys included) replaced by `***`."""
    found = sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True)
    if not found:
        return value

    def mask(v: Any) -> Any:
        if isinstance(v, str):
            for s in found:
                v = v.replace(s, "***")
            return v
        if isinstance(v, dict):
            return {mask(k): mask(x) for k, x in v.items()}
        if isinstance(v, list):
            return [mask(x) for x in v]
        return v

    return mask(value)


def body_of(payload: JSON) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def display_url(url: str) -> str:
    """The URL as it may appear in messages and job state: no credentials, no query string."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<invalid url>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def deliver(url: str, payload: JSON, *, secret: str | None, timeout_s: float, delivery_id: str,
            policy: AddressPolicy | None = None) -> int:
    """POST the payload once. Returns the 2xx status; raises TransientError or PermanentError otherwise.

    The receiver is held to the outbound address policy (public addresses only when None): AddressRefused,
    a PermanentError, before anything is sent."""
    body = body_of(payload)
    headers = {"Content-Type": "application/json", "User-Agent": "repobuild", DELIVERY_HEADER: delivery_id}
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    shown = display_url(url)
    try:
        # Redirects are not followed: a signed body must not be replayed to a host the job did not name.
        with http_client(policy or AddressPolicy(), timeout_s=timeout_s) as client:
            response = client.post(url, content=body, headers=headers)
    except AddressRefused as exc:
        raise AddressRefused(f"callback to {shown} not sent: {exc}") from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise PermanentError(f"callback URL {shown} is not a usable http(s) URL: {exc}") from exc
    except httpx.TimeoutException as exc:
        raise TransientError(f"callback to {shown} timed out after {timeout_s}s") from exc
    except httpx.TransportError as exc:
        raise TransientError(f"callback to {shown} failed: {type(exc).__name__}: {exc}") from exc
    status = response.status_code
    if 200 <= status < 300:
        return status
    if status >= 500 or status in _RETRYABLE_4XX:
        raise TransientError(f"callback to {shown} answered {status}")
    if 300 <= status < 400:
        raise PermanentError(f"callback to {shown} answered a redirect ({status}); redirects are not followed")
    raise PermanentError(f"callback to {shown} refused with {status}")
