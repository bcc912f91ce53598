"""Tier 2: `repobuild probe worker` against a real worker — it passes while the task consumer consumes, and fails
once the consumer stops although the process lives and answers pings (here: `cancel_consumer` for all its queues);
the starvation rule of the heartbeat (celery#8030) on its own."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.settings import Settings
from tests.conftest import Workers
from tests.deploy_files import ROOT, entry_point_argv
from worker.factory import create_celery
from worker.heartbeat import ConsumptionWatch
from worker.queues import QUEUES

MAX_AGE_S = 3.0


def probe(settings: Settings) -> subprocess.CompletedProcess[str]:
    argv = entry_point_argv(["repobuild", "probe", "worker", "--max-age", str(MAX_AGE_S)])
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **settings.to_env()}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def until(check: Callable[[], subprocess.CompletedProcess[str]], timeout: float) -> subprocess.CompletedProcess[str]:
    """The first passing result of `check`, or its last one after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        done = check()
        if done.returncode == 0 or time.monotonic() > deadline:
            return done
        time.sleep(0.3)


@pytest.mark.integration
def test_the_probe_fails_a_live_worker_whose_consumer_stopped(settings: Settings, workers: Workers,
                                                             tmp_path: Path) -> None:
    settings = settings.with_(heartbeat_interval_s=0.5, heartbeat_file=str(tmp_path / "hb" / "worker.heartbeat"))
    assert probe(settings).returncode == 1  # no worker yet: no heartbeat
    w = workers.start(settings, concurrency=1)
    healthy = until(lambda: probe(settings), 20)
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stdout.startswith("ok: worker heartbeat")

    app = create_celery(settings)
    node = w.name.replace("%h", socket.gethostname())
    for q in QUEUES:
        replies = app.control.cancel_consumer(q, destination=[node], reply=True, timeout=5)
        assert replies and "no longer consuming" in str(replies), replies
    time.sleep(MAX_AGE_S + 1.5)
    stopped = probe(settings)
    assert w.alive()
    assert any(node in reply for reply in app.control.ping(destination=[node], timeout=2))  # still answers pings
    assert stopped.returncode == 1
    assert "stopped consuming" in stopped.stderr

    for q in QUEUES:
        app.control.add_consumer(q, destination=[node], reply=True, timeout=5)
    again = until(lambda: probe(settings), 10)
    assert again.returncode == 0, again.stderr

    w.stop()
    gone = probe(settings)
    assert gone.returncode == 1 and "no heartbeat" in gone.stderr  # a worker that shut down removes its beat


def test_a_consumer_starved_with_messages_waiting_stops_being_healthy() -> None:
    watch = ConsumptionWatch(stall_s=60)
    assert watch.healthy(0, subscribed=True, free_slot=True, backlog=0)
    assert watch.healthy(10, subscribed=True, free_slot=True, backlog=3)  # messages wait: the clock starts
    assert watch.healthy(69, subscribed=True, free_slot=True, backlog=3)
    assert not watch.healthy(70, subscribed=True, free_slot=True, backlog=3)  # 60 s, a free process, none taken
    watch.received()
    assert watch.healthy(71, subscribed=True, free_slot=True, backlog=3)  # it takes messages again


def test_a_busy_or_idle_consumer_is_healthy_and_an_unsubscribed_one_is_not() -> None:
    watch = ConsumptionWatch(stall_s=60)
    assert watch.healthy(0, subscribed=True, free_slot=True, backlog=5)
    assert watch.healthy(500, subscribed=True, free_slot=False, backlog=5)  # every process busy: not asking
    assert watch.healthy(501, subscribed=True, free_slot=True, backlog=5)  # the wait starts anew from here
    assert watch.healthy(560, subscribed=True, free_slot=True, backlog=0)
    assert not watch.healthy(561, subscribed=False, free_slot=True, backlog=0)
