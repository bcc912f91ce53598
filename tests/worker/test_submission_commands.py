"""Tier 2: what one `POST /jobs` asks of Redis, seen by the private redis-server itself (MONITOR).

A submission's latency under load is mostly its trips to Redis: it stores the job with its first stage queued and
sends that stage's message in one script (one round trip), and reads nothing back of what it has just written. A
change that adds a read, a command or a round trip per request fails here, not only in the load benchmark (P5).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis

from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore
from tests.conftest import DEMO_REPO, ApiServer

pytestmark = pytest.mark.integration
START, END = "start-of-submission", "end-of-submission"
# process-all (5 keys per job): one EVALSHA, which runs HGET (no job of that id yet), HSET, 2 ZADD, XADD, 5 EXPIRE,
# the first stage's message (LPUSH) and its task-sent event (PUBLISH): 13 commands in 1 round trip.
MAX_COMMANDS = 13
MAX_ROUND_TRIPS = 1
READS = {"GET", "HGET", "HGETALL", "HMGET", "EXISTS", "LRANGE", "XRANGE", "ZRANGE", "SMEMBERS"}


def round_trips(commands: list[str]) -> int:
    """A MULTI ... EXEC block is one trip (redis-py sends a transaction's commands at once), a script with the
    commands it runs (`lua:` here) one, any other command one."""
    trips, in_transaction = 0, False
    for name in commands:
        if name == "MULTI":
            in_transaction = True
        elif name == "EXEC":
            in_transaction, trips = False, trips + 1
        elif not in_transaction and not name.startswith("lua:"):
            trips += 1
    return trips


@contextmanager
def monitored(url: str) -> Iterator[list[str]]:
    """The names of the commands Redis runs between two markers sent around the block, in order, those a script
    runs as `lua:NAME`. A PING is left out: redis-py sends one on a connection idle for a while
    (health_check_interval), whatever the request."""
    seen: list[str] = []
    watcher = redis.Redis.from_url(url, decode_responses=True)
    recording = threading.Event()

    def listen() -> None:
        with watcher.monitor() as m:
            for command in m.listen():
                words = command["command"].split()
                if words[:2] == ["ECHO", START]:
                    recording.set()
                elif words[:2] == ["ECHO", END]:
                    return
                elif recording.is_set() and words[0].upper() != "PING":
                    seen.append(("lua:" if command.get("client_type") == "lua" else "") + words[0].upper())

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    marker = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 10
        while not recording.wait(0.05):  # MONITOR may not be on yet when the first marker goes
            marker.echo(START)
            assert time.monotonic() < deadline, "MONITOR saw no marker"
        yield seen
    finally:
        marker.echo(END)
        thread.join(10)
        marker.close()
        watcher.close()


def test_a_submission_writes_the_job_and_reads_nothing_back(settings: Settings, store: JobStore,
                                                            api_factory: Callable[[Settings], ApiServer]) -> None:
    api = api_factory(settings)
    # the first one opens the connections and declares the queues, once per process
    body = {"task": "process-all", "source": str(DEMO_REPO)}
    assert api.client.post("/jobs", json={**body, "job_id": "warm"}).status_code == 202
    with monitored(settings.redis_url or "") as commands:
        r = api.client.post("/jobs", json={**body, "job_id": "counted"})
    assert r.status_code == 202, r.text
    assert store.get("counted").stage("fetch").status.value == "queued"  # stored, and its first stage sent
    # the one read: is there a job of that id already (in the script, so a concurrent submission cannot slip in)
    assert [c for c in commands if c.removeprefix("lua:") in READS] == ["lua:HGET"], commands
    assert len(commands) <= MAX_COMMANDS, commands
    assert round_trips(commands) <= MAX_ROUND_TRIPS, commands
