"""Fetching an image by URL for the inference API without becoming an SSRF proxy.

Every address the host name resolves to must be public (not private, loopback, link-local,
reserved or multicast) unless the operator allows private addresses. Redirects are followed a few
hops, each one checked the same way, since a public URL could redirect into the private network
(and sites that moved from http to https redirect every old media URL).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

import httpx

from pipeline.errors import PermanentError, TransientError


def _check_host(host: str, port: int, allow_private: bool) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address to connect to, once every address the name resolves to has passed the check."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise PermanentError(f"cannot resolve {host}: {exc}") from exc
    addrs = [ipaddress.ip_address(info[4][0]) for info in infos]
    for addr in addrs:
        if not allow_private and not addr.is_global:
            raise PermanentError(f"imageUrl host {host} resolves to a non-public address ({addr}); refused")
    if not addrs:
        raise PermanentError(f"cannot resolve {host}: no address")
    return addrs[0]


def _pinned(parts: SplitResult, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[str, dict[str, str]]:
    """The URL with the checked address in place of the name, and the Host header naming the site.

    Connecting to the address that was checked (not resolving the name a second time) closes the DNS
    rebinding gap: a name that answered public for the check cannot answer private for the fetch.
    TLS still verifies the certificate against the name (sent as SNI).
    """
    ip = f"[{addr}]" if addr.version == 6 else str(addr)
    netloc = f"{ip}:{parts.port}" if parts.port else ip
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=netloc)), {"Host": f"{host}:{parts.port}" if parts.port else host}


MAX_REDIRECTS = 5


def fetch_image(url: str, *, allow_private: bool, max_bytes: int, timeout_s: float = 15.0) -> bytes:
    for _hop in range(MAX_REDIRECTS + 1):
        data, location = _fetch_once(url, allow_private=allow_private, max_bytes=max_bytes, timeout_s=timeout_s)
        if location is None:
            return data
        url = urljoin(url, location)
    raise PermanentError(f"imageUrl redirected more than {MAX_REDIRECTS} times; not followed further")


def _fetch_once(url: str, *, allow_private: bool, max_bytes: int, timeout_s: float) -> tuple[bytes, str | None]:
    """The body, or the next URL of a redirect (each hop's host is checked before it is asked)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError("imageUrl must be an http(s) URL")
    addr = _check_host(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), allow_private)
    pinned, headers = _pinned(parts, addr)
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client, client.stream(
                "GET", pinned, headers=headers, extensions={"sni_hostname": parts.hostname}) as resp:
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
    except httpx.HTTPError as exc:
        raise TransientError(f"cannot fetch imageUrl: {type(exc).__name__}") from exc
