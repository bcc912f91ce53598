"""Fetching an image by URL for the inference API without becoming an SSRF proxy.

Every address the host name resolves to must be public (not private, loopback, link-local,
reserved or multicast) unless the operator allows private addresses; redirects are not followed,
since a public URL could redirect into the private network.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import httpx

from pipeline.errors import PermanentError, TransientError


def _check_host(host: str, port: int, allow_private: bool) -> None:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise PermanentError(f"cannot resolve {host}: {exc}") from exc
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        if not allow_private and not addr.is_global:
            raise PermanentError(f"imageUrl host {host} resolves to a non-public address ({addr}); refused")


def fetch_image(url: str, *, allow_private: bool, max_bytes: int, timeout_s: float = 15.0) -> bytes:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError("imageUrl must be an http(s) URL")
    _check_host(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), allow_private)
    try:
        with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=False) as resp:
            if resp.is_redirect:
                raise PermanentError(f"imageUrl answered with a redirect ({resp.status_code}); not followed")
            if resp.status_code >= 500:
                raise TransientError(f"imageUrl answered {resp.status_code}")
            if resp.status_code >= 400:
                raise PermanentError(f"imageUrl answered {resp.status_code}")
            data = bytearray()
            for chunk in resp.iter_bytes():
                data.extend(chunk)
                if len(data) > max_bytes:
                    raise PermanentError(f"image at imageUrl is larger than {max_bytes} bytes")
            return bytes(data)
    except httpx.HTTPError as exc:
        raise TransientError(f"cannot fetch imageUrl: {type(exc).__name__}") from exc
