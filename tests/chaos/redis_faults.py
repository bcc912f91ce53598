"""What the tests that stop Redis share: a private Redis with its AOF on, so a restart keeps every job and message."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from api.cli.local_services import PrivateRedis


@pytest.fixture(name="redis_server")
def aof_redis_server() -> Iterator[PrivateRedis]:
    """Replaces the conftest's `redis_server` in a module that imports it: the same, with `appendonly yes` and
    `appendfsync always`, so every write acknowledged before a restart is there after it."""
    with PrivateRedis(appendonly=True) as server:
        yield server
