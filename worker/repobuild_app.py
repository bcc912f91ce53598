"""The Celery app type: it carries its Settings and opens its stores lazily (after fork).

Apart from worker.factory (which configures it and registers the tasks) so that the modules the tasks
are built from can name the type without importing the factory.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import redis
from celery import Celery

from pipeline.settings import Settings
from pipeline.stores.artifacts import ArtifactStore
from pipeline.stores.artifacts_s3 import artifact_store
from pipeline.stores.jobs import JobStore
from pipeline.stores.jobs_redis import RedisJobStore
from pipeline.stores.redis_connect import redis_client


class RepobuildCelery(Celery):
    """A Celery app that carries its Settings and opens its stores lazily (after fork).

    Assigning `store` before first use replaces the Redis store: unit tests of the tasks give it a
    MemoryJobStore and need no Redis."""

    repobuild_settings: Settings

    @cached_property
    def store(self) -> JobStore:
        s = self.repobuild_settings
        assert s.redis_url, "REPOBUILD_REDIS_URL is required"
        return RedisJobStore.from_url(s.redis_url, s.redis_sentinel_master, prefix=s.key_prefix, ttl_s=s.state_ttl_s,
                                      events_max=s.events_max)

    @cached_property
    def sends_with_jobs(self) -> bool:
        """Whether a new job's first message can be written in the same step as the job: the job store and the
        broker are the same Redis (one REPOBUILD_REDIS_URL), not a test's in-memory store or transport."""
        return isinstance(self.store, RedisJobStore) and self.connection_for_write().transport.driver_type == "redis"

    def redis_client(self, **kw: Any) -> redis.Redis:
        """A client of the broker's Redis (kombu's keys: queues, unacked messages), Sentinel URLs included."""
        s = self.repobuild_settings
        return redis_client(s.redis_url or "", s.redis_sentinel_master, **kw)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        # A folder, or `s3://bucket/prefix` so workers on different machines share only Redis and the bucket.
        return artifact_store(self.repobuild_settings)
