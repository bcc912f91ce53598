"""Prometheus metrics of the API and of the work: `GET /metrics`, open like /health (no job data, no secrets).

What the API's own processes counted (jobs submitted, cancelled) comes from PROMETHEUS_MULTIPROC_DIR when
gunicorn runs several workers, and the queue depths are read from Redis at each scrape. The workers' task
metrics are on each worker's own exporter (worker/metrics_server.py); Flower keeps its own /metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import redis
from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from api.extensions import settings_of
from api.openapi import endpoint
from worker.inflight import PRIORITY_SEP, PRIORITY_STEPS
from worker.metrics import QUEUE_DEPTH
from worker.metrics_server import registry_of
from worker.queues import QUEUES

bp = Blueprint("metrics", __name__)


class QueueDepth(Collector):
    """Messages waiting in each queue (all its priority lists), read when scraped: what KEDA scales on."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(QUEUE_DEPTH, "Messages waiting in each queue", labels=["queue"])
        with self.client.pipeline(transaction=False) as pipe:
            for q in QUEUES:
                for p in PRIORITY_STEPS:
                    pipe.llen(q if p == 0 else f"{q}{PRIORITY_SEP}{p}")
            lengths = cast(list[int], pipe.execute())
        steps = len(PRIORITY_STEPS)
        for i, q in enumerate(QUEUES):
            family.add_metric([q], float(sum(lengths[i * steps:(i + 1) * steps])))
        yield family


class _Proxy(Collector):
    """Another registry's metrics inside a per-scrape registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        yield from self.registry.collect()


@bp.get("/metrics")
@endpoint(ok={200: None}, public=True, tags=("metrics",))
def metrics() -> Any:
    """Prometheus text format: the API's counters and the depth of each queue."""
    settings = settings_of()
    registry = CollectorRegistry()
    registry.register(_Proxy(registry_of(settings)))
    client = redis.Redis.from_url(settings.redis_url or "", socket_timeout=5)
    try:
        registry.register(QueueDepth(client))
        body = generate_latest(registry)
    finally:
        client.close()
    return Response(body, content_type=CONTENT_TYPE_LATEST)
