"""What dulwich is given to reach a git remote: the outbound policy, timeouts, and the token for that remote.

dulwich's smart-HTTP client takes a urllib3 pool manager (`pool_manager=`); ours (pinned.py) opens only
connections the policy checked and sets a connect and a read timeout. ssh and git:// remotes are held to
`check_git_url` before dulwich sees them. The token goes as HTTP basic credentials (user `x-access-token`,
as GitHub accepts), never in a URL; dulwich sends it only to the origin of the URL it was given.
"""

from __future__ import annotations

from typing import Any

from pipeline.http.address_policy import AddressPolicy, check_git_url
from pipeline.http.pinned import pool_manager

DEFAULT_TIMEOUT_S = 60.0


def is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def credentials(url: str, token: str | None) -> tuple[str | None, str | None]:
    """dulwich's (username, password) that send `token` as basic auth to an http(s) remote."""
    if token and is_http(url):
        return "x-access-token", token
    return None, None


def transport_kwargs(url: str, *, policy: AddressPolicy, timeout_s: float = DEFAULT_TIMEOUT_S,
                     token: str | None = None) -> dict[str, Any]:
    """Keyword arguments for porcelain.clone / push / get_transport_and_path that hold `url` to the policy.

    Raises AddressRefused for a remote the policy refuses before any connection (see check_git_url)."""
    check_git_url(policy, url)
    if not is_http(url):
        return {}
    username, password = credentials(url, token)
    kwargs: dict[str, Any] = {"pool_manager": pool_manager(policy, timeout_s=timeout_s)}
    if username is not None:
        kwargs.update(username=username, password=password)
    return kwargs
