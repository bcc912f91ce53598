"""Connections that go only to addresses the policy checked: one mechanism under both HTTP stacks we use.

The check and the connection are one step. A host is resolved once, every address it resolves to is
checked (address_policy.py), and the socket is opened to one of those addresses, never to the name again,
so DNS rebinding (public for the check, private for the connection) has nothing to work with. Because the
check sits where connections are opened, every redirect hop to a new host is checked too, whatever the
client's redirect handling. TLS still verifies the certificate against the host name, sent as SNI.

- httpx (callbacks, imageUrl, WordPress attachments, the GitHub API): an httpcore network backend.
- urllib3 (dulwich's smart-HTTP git client, clone and push): a pool manager whose connections do the same,
  with connect and read timeouts, since dulwich sets none and a silent server would hold a clone forever.

Requests made here ignore HTTP(S)_PROXY: a proxy would resolve the name itself, out of the policy's sight.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from typing import ClassVar, TypeVar

import httpcore
import httpx
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection as urllib3_connection

from pipeline.http.address_policy import AddressPolicy, IPAddress

T = TypeVar("T")


def connect_first(addresses: Iterable[IPAddress], connect: Callable[[str], T],
                  errors: tuple[type[Exception], ...]) -> T:
    """`connect` to the first of the checked addresses that answers (as socket.create_connection tries each)."""
    last: Exception | None = None
    for addr in addresses:
        try:
            return connect(str(addr))
        except errors as exc:
            last = exc
    assert last is not None, "AddressPolicy.addresses never returns an empty list"
    raise last


# ---------------------------------------------------------------------------------------------- httpx


class _CheckedBackend(httpcore.SyncBackend):
    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.NetworkStream:
        addresses = self.policy.addresses(host, port)
        return connect_first(addresses, lambda ip: super(_CheckedBackend, self).connect_tcp(
            ip, port, timeout, local_address, socket_options), (httpcore.ConnectError, httpcore.ConnectTimeout))


class PolicyTransport(httpx.HTTPTransport):
    """httpx's own transport, its connection pool built on the checked backend."""

    def __init__(self, policy: AddressPolicy) -> None:
        tls = httpx.create_ssl_context()  # httpx's defaults: certifi, or SSL_CERT_FILE when set
        super().__init__(verify=tls, trust_env=False)
        # httpx builds its pool with httpcore's default backend and offers no argument for another one;
        # this is the same pool, given ours.
        self._pool = httpcore.ConnectionPool(ssl_context=tls, network_backend=_CheckedBackend(policy))


def http_client(policy: AddressPolicy, *, timeout_s: float, follow_redirects: bool = False,
                max_redirects: int = 5) -> httpx.Client:
    """An httpx client whose every connection (redirect hops included) goes to a checked address."""
    return httpx.Client(transport=PolicyTransport(policy), timeout=timeout_s, follow_redirects=follow_redirects,
                        max_redirects=max_redirects, trust_env=False)


# ---------------------------------------------------------------------------------------------- urllib3


class _CheckedConnection(HTTPConnection):
    policy: ClassVar[AddressPolicy]

    def _new_conn(self) -> socket.socket:
        # urllib3's own _new_conn, with the name resolved and checked first and the socket opened to the result.
        addresses = self.policy.addresses(self.host, self.port)

        def connect(ip: str) -> socket.socket:
            return urllib3_connection.create_connection((ip, self.port), self.timeout,
                                                        source_address=self.source_address,
                                                        socket_options=self.socket_options)

        try:
            return connect_first(addresses, connect, (OSError,))
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out. "
                                            f"(connect timeout={self.timeout})") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc


def pool_manager(policy: AddressPolicy, *, timeout_s: float) -> urllib3.PoolManager:
    """A urllib3 pool manager for dulwich: checked connections, a connect and a read timeout, no read retries.

    A read that times out is not retried here: the stage's own retry policy decides, so a silent server
    costs one timeout, not four."""

    class Http(_CheckedConnection):
        pass

    class Https(_CheckedConnection, HTTPSConnection):
        pass

    Http.policy = Https.policy = policy

    class HttpPool(HTTPConnectionPool):
        ConnectionCls = Http

    class HttpsPool(HTTPSConnectionPool):
        ConnectionCls = Https

    manager = urllib3.PoolManager(timeout=urllib3.Timeout(connect=min(10.0, timeout_s), read=timeout_s),
                                  retries=urllib3.Retry(total=None, connect=2, read=0, status=0, redirect=5))
    manager.pool_classes_by_scheme = {"http": HttpPool, "https": HttpsPool}
    return manager
