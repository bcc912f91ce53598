"""The outbound address policy: which hosts a request made on a caller's behalf may reach.

A shared service must not become a proxy into its own network. Every request a job or an API call makes
for a caller (callback, git clone and push, GitHub API, imageUrl, WordPress attachments) may reach only
public addresses, plus what the operator lists in REPOBUILD_ALLOW_HOSTS (host names and CIDRs).

"Public" is decided here, not by `ipaddress.is_global` alone: Python 3.11 calls the NAT64 (64:ff9b::/96)
and 6to4 (2002::/16) spellings of 127.0.0.1 or 169.254.169.254 global. An IPv6 address that carries an
IPv4 address (v4-mapped, NAT64, 6to4, Teredo) is judged by the IPv4 address it carries, and the local-use
NAT64 prefix 64:ff9b:1::/48 and the deprecated IPv4-compatible ::/96 are never public.

Host strings are read the way resolvers read them: `2130706433`, `0x7f.1`, `0177.0.0.1` and `127.1` are
all 127.0.0.1 to getaddrinfo, so they are to `ip_literal` too. That lets a request be refused before any
name is resolved (at enqueue); a name is checked again when it is resolved, right before connecting
(pipeline/http/pinned.py connects to the address checked here, so a second DNS answer cannot differ).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipeline.errors import PermanentError, TransientError
from pipeline.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_SCP_LIKE_GIT = re.compile(r"^[^/@:]+@[^/:]+:")  # git@host:owner/repo.git, ssh without a scheme
_UNPINNED_GIT_SCHEMES = ("ssh", "git+ssh", "git")
_DIGITS = {10: "0123456789", 8: "01234567", 16: "0123456789abcdef"}


class AddressRefused(PermanentError):
    """A request would reach an address the policy refuses. The message names the host, never what it resolved to."""


def _loose_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address of inet_aton's forms (1 to 4 parts, each decimal, 0x hex or 0-led octal), else None."""
    parts = (text[:-1] if text.endswith(".") else text).lower().split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        if part.startswith("0x"):
            base, digits = 16, part[2:]
        elif len(part) > 1 and part.startswith("0"):
            base, digits = 8, part[1:]
        else:
            base, digits = 10, part
        if not part or not all(c in _DIGITS[base] for c in digits):
            return None
        numbers.append(int(digits, base) if digits else 0)
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def ip_literal(host: str) -> IPAddress | None:
    """The address `host` spells (IPv6 with or without brackets, IPv4 in any form a resolver takes), else None."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    return _loose_ipv4(text)


def embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (v4-mapped, NAT64, 6to4, Teredo server and client)."""
    if addr.ipv4_mapped is not None:
        return [addr.ipv4_mapped]
    if addr in _NAT64:
        return [ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)]
    if addr.sixtofour is not None:
        return [addr.sixtofour]
    if addr.teredo is not None:
        return list(addr.teredo)
    return []


def _plainly_public(addr: IPAddress) -> bool:
    if addr.is_multicast or addr.is_reserved or addr.is_unspecified or addr.is_loopback or addr.is_link_local:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local:
        return False
    return addr.is_global


def is_public(addr: IPAddress) -> bool:
    """True when `addr` is a globally reachable unicast address, once unwrapped from any IPv6 spelling."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr in _LOCAL_NAT64 or addr in _IPV4_COMPATIBLE:
            return False
        inner = embedded_ipv4(addr)
        if not all(_plainly_public(v4) for v4 in inner):
            return False
        if inner and addr.teredo is None:
            # v4-mapped, NAT64 and 6to4 of a public address are how IPv6-only networks reach it: judged by it.
            # Teredo goes on to the plain check, which (2001::/23 not being global) refuses it anyway.
            return True
    return _plainly_public(addr)


def _host_name(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _is_localhost_name(name: str) -> bool:
    # RFC 6761: localhost and every name under it are loopback, whatever a resolver is configured to say.
    return name == "localhost" or name.endswith(".localhost")


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses, plus the operator's allowlist: host names (exact) and networks (CIDRs or addresses).

    `any_address` is the deprecated REPOBUILD_ALLOW_PRIVATE_IMAGE_URLS switch, honoured for image fetches only.
    """

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()
    any_address: bool = False

    @classmethod
    def of(cls, entries: Iterable[str], *, any_address: bool = False) -> AddressPolicy:
        """The policy of REPOBUILD_ALLOW_HOSTS's entries: `10.0.0.0/8`, `127.0.0.1`, `::1`, `git.internal`."""
        hosts, networks = set(), []
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(_host_name(entry))
        return cls(frozenset(hosts), tuple(networks), any_address)

    def allows_host(self, host: str) -> bool:
        """The operator listed this host name."""
        return _host_name(host) in self.hosts

    def lists(self, host: str) -> bool:
        """The operator listed this host, by name or (a literal address) by one of the networks."""
        literal = ip_literal(host)
        return self.allows_host(host) or (literal is not None and self._listed(literal))

    def _listed(self, addr: IPAddress) -> bool:
        mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
        return any(a in net for a in (addr, mapped) if a is not None for net in self.networks
                   if a.version == net.version)

    def allows_address(self, addr: IPAddress) -> bool:
        return self.any_address or is_public(addr) or self._listed(addr)

    def check_host(self, host: str) -> None:
        """Refuse a host that is a non-public address however it is spelled, or a localhost name, before any DNS.

        Names are let through: they are checked when they are resolved (`addresses`), right before connecting."""
        if not host:
            raise AddressRefused("address refused: the URL names no host")
        if self.allows_host(host):
            return
        addr = ip_literal(host)
        if addr is not None and not self.allows_address(addr):
            spelled = _host_name(host)
            shown = spelled if spelled == str(addr) else f"{spelled} ({addr})"
            raise AddressRefused(f"address refused: {shown} is a non-public address")
        if addr is None and _is_localhost_name(_host_name(host)) and not self.any_address:
            raise AddressRefused(f"address refused: {_host_name(host)} is a non-public address (a loopback name)")

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """Every address `host` resolves to, each one allowed, in the resolver's order; else AddressRefused.

        One refused address refuses the host: a name that answers both public and private is not trusted."""
        self.check_host(host)
        literal = ip_literal(host)
        if literal is not None:
            return [literal]
        try:
            infos = socket.getaddrinfo(_host_name(host), port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                raise PermanentError(f"cannot resolve {_host_name(host)}: no such host") from None
            raise TransientError(f"cannot resolve {_host_name(host)}: {exc.strerror or exc}") from None
        found: list[IPAddress] = []
        for info in infos:
            addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if addr not in found:
                found.append(addr)
        if not found:
            raise PermanentError(f"cannot resolve {_host_name(host)}: no address")
        if self.allows_host(host):
            return found
        if not all(self.allows_address(a) for a in found):
            raise AddressRefused(f"address refused: {_host_name(host)} resolves to a non-public address")
        return found


def outbound_policy(settings: Settings) -> AddressPolicy:
    """The operator's policy for requests made on a caller's behalf."""
    return AddressPolicy.of(settings.allow_hosts)


def image_policy(settings: Settings) -> AddressPolicy:
    """The policy for image fetches, where the deprecated REPOBUILD_ALLOW_PRIVATE_IMAGE_URLS still counts."""
    return AddressPolicy.of(settings.allow_hosts, any_address=settings.allow_private_image_urls)


def url_host(url: str) -> str | None:
    """The host a URL (or an scp-like `git@host:path`) names, lower case, without brackets; None if none."""
    if _SCP_LIKE_GIT.match(url):
        return _host_name(url.split("@", 1)[1].split(":", 1)[0])
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return _host_name(host) if host else None


def check_url(policy: AddressPolicy, url: str) -> None:
    """Refuse an http(s) URL whose host is refused before any DNS (see AddressPolicy.check_host)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise AddressRefused("address refused: not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise AddressRefused("address refused: only http(s) URLs are allowed")
    policy.check_host(url_host(url) or "")


def check_git_url(policy: AddressPolicy, url: str) -> None:
    """Refuse a git remote the policy cannot hold: http(s) as `check_url`; ssh and git:// only to listed hosts.

    ssh runs a client of its own and git:// opens a bare socket: neither connects to an address checked here
    or keeps our timeouts, so they reach only hosts the operator named. Local paths and file:// are not
    network requests and are left to the local-source rules."""
    scheme = "ssh" if _SCP_LIKE_GIT.match(url) else urlsplit(url).scheme.lower()
    if scheme in ("", "file"):
        return
    if scheme in ("http", "https"):
        check_url(policy, url)
        return
    host = url_host(url) or ""
    if scheme in _UNPINNED_GIT_SCHEMES and policy.lists(host):
        return
    if scheme in _UNPINNED_GIT_SCHEMES:
        raise AddressRefused(f"address refused: {scheme} git URLs may reach only hosts on the operator's "
                             f"allowlist, and {host or 'this host'} is not on it; use an https URL")
    raise AddressRefused(f"address refused: {scheme}:// is not a git transport this service uses")


def refused_field(policy: AddressPolicy, *, git: Mapping[str, object],
                  http: Mapping[str, object]) -> tuple[str, str] | None:
    """The first request field whose URL is refused before any DNS, and why; None when every one may be tried.

    `git` maps field names to git remotes (only values that are URLs count: a local path is not a request),
    `http` to http(s) URLs (callbacks). Names are resolved and checked again when connected to; DNS is not
    asked here, since a name that fails to resolve now may resolve later."""
    for field, value in git.items():
        if isinstance(value, str) and ("://" in value or _SCP_LIKE_GIT.match(value)):
            try:
                check_git_url(policy, value)
            except AddressRefused as exc:
                return field, str(exc)
    for field, value in http.items():
        if isinstance(value, str) and value:
            try:
                check_url(policy, value)
            except AddressRefused as exc:
                return field, str(exc)
    return None
