"""Timestamps as the original's clients read them: `2026-01-02T03:04:05.678Z` (JavaScript's toISOString)."""

from __future__ import annotations

from datetime import UTC, datetime

Timestamp = float | datetime


def iso(ts: Timestamp) -> str:
    dt = ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts, UTC)
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso(datetime.now(UTC))
