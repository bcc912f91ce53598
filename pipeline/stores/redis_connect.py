"""A Redis client for REPOBUILD_REDIS_URL: `redis://`, `rediss://`, `unix://`, or Redis Sentinel.

A Sentinel URL is kombu's own form, so the broker (Celery) and our stores read the same variable:
`sentinel://[:password@]host1:26379;sentinel://host2:26379;sentinel://host3:26379/0` — the sentinels, `;`-separated,
the password (of the Redis master) and the database number on the first or last part. The master's name is
REPOBUILD_REDIS_SENTINEL_MASTER; each command goes to whichever server the sentinels name master at that moment,
so a failover costs a reconnect, not a restart.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "sentinel://"
SENTINEL_PORT = 26379


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME)


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], int, str | None, str | None]:
    """(sentinel addresses, database, username, password) of a kombu-style Sentinel URL."""
    nodes: list[tuple[str, int]] = []
    db, username, password = 0, None, None
    for part in url.split(";"):
        parts = urlsplit(part.strip())
        if parts.scheme != "sentinel" or not parts.hostname:
            raise ValueError(f"REPOBUILD_REDIS_URL: {part!r} is not sentinel://host:port")
        nodes.append((parts.hostname, parts.port or SENTINEL_PORT))
        if parts.password:
            username, password = (unquote(parts.username) if parts.username else None), unquote(parts.password)
        if parts.path.strip("/"):
            db = int(parts.path.strip("/"))
    return nodes, db, username, password


def redis_client(url: str, sentinel_master: str, **kw: Any) -> redis.Redis:
    """`redis.Redis.from_url(url, **kw)`, or for a Sentinel URL the current master of `sentinel_master`."""
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **kw)
    nodes, db, username, password = parse_sentinel_url(url)
    timeouts = {k: kw[k] for k in ("socket_timeout", "socket_connect_timeout") if k in kw}
    sentinel = Sentinel(nodes, sentinel_kwargs=timeouts)  # type: ignore[no-untyped-call]
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        sentinel_master, db=db, username=username, password=password, **kw)
    return client
