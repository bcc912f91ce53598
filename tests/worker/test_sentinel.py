"""Tier 2: REPOBUILD_REDIS_URL as a Redis Sentinel URL (kombu's form) — the broker, the job store, the reconciler,
the in-flight scan and the worker heartbeat all find the master through a real redis-sentinel."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from api.cli.local_services import PrivateRedis, free_port, redis_server_binary
from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.stores.redis_connect import parse_sentinel_url
from tests.conftest import DEMO_REPO, ApiServer, Workers, wait_job
from worker.factory import create_celery
from worker.reconciler import reconcile_once

pytestmark = pytest.mark.integration


@pytest.fixture
def sentinel(redis_server: PrivateRedis, tmp_path: Path) -> Iterator[int]:
    """A redis-sentinel on a free port watching the test's Redis as master `mymaster`; its port."""
    port = free_port()
    conf = tmp_path / "sentinel.conf"  # sentinel rewrites its own config file: it must be writable
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor mymaster 127.0.0.1 {redis_server.port} 1\n")
    proc = subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = redis.Redis(port=port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, "redis-sentinel exited"
            try:
                if client.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster"):
                    break
            except redis.exceptions.ConnectionError:
                pass  # not listening yet
            assert time.monotonic() < deadline, "redis-sentinel did not name the master"
            time.sleep(0.1)
        client.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_job_runs_with_the_broker_and_the_stores_behind_sentinel(
        settings: Settings, sentinel: int, workers: Workers, api_factory: Callable[[Settings], ApiServer]) -> None:
    # Only live sentinels: with an unreachable one listed first the same test passed but took 63 s, kombu's worker
    # needing 15 s to be ready and 38 s to answer control commands (README "Redis with failover").
    url = f"sentinel://127.0.0.1:{sentinel}/0"
    settings = settings.with_(redis_url=url, heartbeat_interval_s=0.5)
    workers.start(settings)
    api = api_factory(settings)
    r = api.client.post("/jobs", json={"task": "process-all", "source": str(DEMO_REPO), "job_id": "via-sentinel",
                                       "options": {"skipEmbeddings": True}})
    assert r.status_code == 202, r.text
    app = create_celery(settings)
    assert wait_job(app.store, "via-sentinel").status == JobStatus.COMPLETED
    assert reconcile_once(app, app.redis_client()) == []
    assert Path(settings.heartbeat_file).is_file()  # the worker's heartbeat reads its queues' lengths there too


def test_sentinel_urls_parse_as_kombu_writes_them() -> None:
    assert parse_sentinel_url("sentinel://:pw@s1:26380;sentinel://s2;sentinel://s3:26379/2") == (
        [("s1", 26380), ("s2", 26379), ("s3", 26379)], 2, None, "pw")
    with pytest.raises(ValueError, match="redis://r:6379"):
        parse_sentinel_url("sentinel://s1:26379;redis://r:6379")
