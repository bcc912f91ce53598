"""The Celery app type: it carries its Settings and opens its stores lazily (after fork).

Apart from worker.factory (which configures it and registers the tasks) so that the modules the tasks
are built from can name the type without importing the factory.
"""

from __future__ import annotations

from functools import cached_property

from celery import Celery

from pipeline.settings import Settings
from pipeline.stores.artifacts import ArtifactStore
from pipeline.stores.artifacts_s3 import artifact_store
from pipeline.stores.jobs import JobStore
from pipeline.stores.jobs_redis import RedisJobStore


class RepobuildCelery(Celery):
    """A Celery app that carries its Settings and opens its stores lazily (after fork).

    Assigning `store` before first use replaces the Redis store: unit tests of the tasks give it a
    MemoryJobStore and need no Redis."""

    repobuild_settings: Settings

    @cached_property
    def store(self) -> JobStore:
        s = self.repobuild_settings
        assert s.redis_url, "REPOBUILD_REDIS_URL is required"
        return RedisJobStore.from_url(s.redis_url, prefix=s.key_prefix, ttl_s=s.state_ttl_s, events_max=s.events_max)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        # A folder, or `s3://bucket/prefix` so workers on different machines share only Redis and the bucket.
        return artifact_store(self.repobuild_settings)
