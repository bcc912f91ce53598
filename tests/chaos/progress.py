"""What the chaos tests read of a job's progress: its events after a moment, its stages' work."""

from __future__ import annotations

import time

import redis

from pipeline.stores.jobs import JobStore

# events that mean a worker took or finished a piece of the job
PROGRESS = frozenset({"started", "resumed", "done", "continue", "completed"})


def progress_since(store: JobStore, job_id: str, since: float) -> float | None:
    """When the job first made progress at or after `since` (a wall-clock time), if it has."""
    stamps = [float(ev["ts"]) for _id, ev in store.events(job_id) if ev.get("type") in PROGRESS
              and float(ev["ts"]) >= since]
    return min(stamps) if stamps else None


def wait_progress(store: JobStore, job_ids: list[str], since: float, timeout: float) -> float:
    """Seconds from `since` to the first progress of any of `job_ids`; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen = [t for j in job_ids if (t := progress_since(store, j, since)) is not None]
        except redis.exceptions.ConnectionError:  # the store's client reconnects on its next call
            seen = []
        if seen:
            return min(seen) - since
        time.sleep(0.05)
    raise AssertionError(f"no progress of {job_ids} within {timeout}s after the fault")
