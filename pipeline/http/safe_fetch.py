"""Fetching an image by URL (imageUrl of the inference API, WordPress attachments) without becoming an SSRF proxy.

Where the request may go is the outbound policy's business (address_policy.py, enforced on every connection
by pinned.py). Redirects are followed a few hops by hand, since a moved site redirects every old media URL;
each hop to a new host is checked when it is connected to, like the first.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

import httpx

from pipeline.errors import PermanentError, TransientError
from pipeline.http.address_policy import AddressPolicy, AddressRefused
from pipeline.http.pinned import http_client

MAX_REDIRECTS = 5


def fetch_image(url: str, *, policy: AddressPolicy, max_bytes: int, timeout_s: float = 15.0) -> bytes:
    with http_client(policy, timeout_s=timeout_s) as client:
        for _hop in range(MAX_REDIRECTS + 1):
            data, location = _fetch_once(client, url, max_bytes=max_bytes)
            if location is None:
                return data
            url = urljoin(url, location)
    raise PermanentError(f"imageUrl redirected more than {MAX_REDIRECTS} times; not followed further")


def _fetch_once(client: httpx.Client, url: str, *, max_bytes: int) -> tuple[bytes, str | None]:
    """The body, or the next URL of a redirect."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError("imageUrl must be an http(s) URL")
    try:
        with client.stream("GET", url) as resp:
            if resp.is_redirect:
                location = resp.headers.get("location")
                if not location:
                    raise PermanentError(f"imageUrl answered {resp.status_code} without a Location")
                return b"", location
            if resp.status_code >= 500:
                raise TransientError(f"imageUrl answered {resp.status_code}")
            if resp.status_code >= 400:
                raise PermanentError(f"imageUrl answered {resp.status_code}")
            data = bytearray()
            for chunk in resp.iter_bytes():
                data.extend(chunk)
                if len(data) > max_bytes:
                    raise PermanentError(f"image at imageUrl is larger than {max_bytes} bytes")
            return bytes(data), None
    except AddressRefused as exc:
        raise AddressRefused(f"imageUrl: {exc}") from None
    except httpx.HTTPError as exc:
        raise TransientError(f"cannot fetch imageUrl: {type(exc).__name__}") from exc
