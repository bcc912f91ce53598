"""An in-memory key space with Redis's expiry rules, which MemoryJobStore keeps its keys in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

Clock = Callable[[], float]


class Keyspace:
    """Values by key, each with an optional deadline. As in Redis, a key past its deadline is gone, and so is
    a hash, set or list once it is empty."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._values: dict[str, Any] = {}
        self._deadlines: dict[str, float] = {}

    def get(self, key: str) -> Any | None:
        deadline = self._deadlines.get(key)
        value = self._values.get(key)
        if (deadline is not None and self.clock() >= deadline) or (isinstance(value, dict | list) and not value):
            self.delete(key)
            return None
        return value

    def put(self, key: str, value: Any, ttl_s: float | None = None) -> None:
        self._values[key] = value
        self._deadlines.pop(key, None)
        if ttl_s is not None:
            self._deadlines[key] = self.clock() + ttl_s

    def delete(self, key: str) -> None:
        self._values.pop(key, None)
        self._deadlines.pop(key, None)

    def expire(self, key: str, ttl_s: float) -> None:
        """Like EXPIRE: a key that does not exist stays absent."""
        if self.get(key) is not None:
            self._deadlines[key] = self.clock() + ttl_s

    def _made(self, key: str, empty: Callable[[], Any]) -> Any:
        """The container at `key`, made (empty) when missing: a write to a missing key creates it."""
        found = self.get(key)
        if found is None:
            found = empty()
            self.put(key, found)
        return found

    def hash(self, key: str) -> dict[str, str]:
        return cast(dict[str, str], self._made(key, dict))

    def peek_hash(self, key: str) -> dict[str, str]:
        return dict(cast(dict[str, str], self.get(key) or {}))

    def members(self, key: str) -> dict[str, float]:
        """A sorted set: member → score."""
        return cast(dict[str, float], self._made(key, dict))

    def items(self, key: str) -> list[Any]:
        """A list (issues) or a stream (events)."""
        return cast(list[Any], self._made(key, list))
