"""The Redis commands a stage sends grow with its batches, not with its items: the parse task and its batch tasks,
run as a worker runs them, on a private Redis watched with MONITOR.

Commands the clock decides (the lease renewals, the cancellation checks of `should_yield`) are left out of the
count: they depend on how long the run takes, not on how many posts it has.
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from pathlib import Path

import pytest
import redis
from celery.exceptions import Ignore

from pipeline.catalog import SOURCE_TREE
from pipeline.models import JobSpec, StageStatus
from pipeline.settings import Settings
from pipeline.stages import parse
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.jobs_redis import RedisJobStore
from worker.batch_task import BatchTask
from worker.repobuild_app import RepobuildCelery
from worker.stage_task import BATCH_TASK, StageTask

pytestmark = pytest.mark.timeout(120)

POSTS = 120
BATCH = 30
STOP = "monitor-test-stop"


class Monitor:
    """Every command Redis receives from a client (not those a Lua script runs), as its list of words."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.commands: list[list[str]] = []
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._ready = threading.Event()

    def _listen(self) -> None:
        with self.client.monitor() as monitor:
            self._ready.set()
            for seen in monitor.listen():
                if seen.get("client_type") == "lua":
                    continue
                words = [w.strip('"') for w in str(seen["command"]).split(" ")]
                if STOP in words:
                    return
                self.commands.append(words)

    def __enter__(self) -> Monitor:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.echo(STOP)
        self._thread.join(timeout=10)
        self.client.close()


def write_corpus(folder: Path) -> None:
    for n in range(POSTS):
        # each post links to the next and to a page that does not exist: an issue per post, recorded in bulk too
        (folder / f"post-{n:03d}.md").write_text(f"# Post {n}\n\nSee [the next](post-{n + 1:03d}.md) and "
                                                 f"[[Nowhere {n}]].\n", encoding="utf-8")


def periodic(words: list[str], settings: Settings, job_id: str) -> bool:
    """The lease keepers' renewals and should_yield's status reads: their number is the run's length in time."""
    lease = f"{settings.key_prefix}lease:{job_id}:parse"
    renew = (words[0].upper() in ("EVALSHA", "EVAL") and words[2] == "1" and words[3].startswith(lease)
             and len(words) == 6)  # KEYS[1], token, ttl: a renewal (a release has no ttl)
    status = words[0].upper() == "HGET" and words[2:3] == ["status"]
    return renew or status


def test_parse_sends_a_bounded_number_of_commands_per_batch(settings: Settings, celery_app: RepobuildCelery,
                                                            store: RedisJobStore, tmp_path: Path) -> None:
    settings = settings.with_(parse_batch=BATCH, task_budget_s=600.0)
    celery_app.repobuild_settings = settings
    job_id = "commands"
    store.create(JobSpec(job_id=job_id, task="process-all"), ("fetch", "parse", "notify"))
    tree = LocalArtifactStore(settings.artifacts).path(SOURCE_TREE.key(job_id))
    tree.mkdir(parents=True)
    write_corpus(tree)
    task: StageTask = celery_app.tasks["repobuild.parse"]
    batch_task: BatchTask = celery_app.tasks[BATCH_TASK]

    with Monitor(settings.redis_url or "") as monitor:
        # discovery, then the batches sent: the stage waits for them in a continuation (sent to the broker, where
        # no worker takes it: this test runs each task itself)
        with pytest.raises(Ignore):
            task.execute(job_id, parse.run, False)
        first = len(monitor.commands)
        batches = int((store.stage(job_id, "parse").cursor or {})["batches"])
        assert batches == POSTS // parse.posts_per_batch(POSTS, BATCH)
        for n in range(batches):
            assert batch_task.execute(job_id, "parse", n) == "done"
        last = len(monitor.commands)
        assert task.execute(job_id, parse.run, True) == "done"
    shutil.rmtree(tree)

    parse_state = store.stage(job_id, "parse")
    assert parse_state.status == StageStatus.DONE and parse_state.summary["posts"] == POSTS
    assert store.issue_count(job_id) >= POSTS  # the issues were recorded, and not one command each
    def counted_in(commands: list[list[str]]) -> list[list[str]]:
        return [w for w in commands if not periodic(w, settings, job_id)]

    counted = counted_in(monitor.commands)
    of_batches = counted_in(monitor.commands[first:last])
    notes = [w for w in counted if w[0].upper() == "HSET" and w[1].endswith(":batches:parse:items")]
    assert len(notes) == batches, Counter(w[0] for w in notes)  # one input named per healthy batch run
    # Per batch task, 52 when this was written, in 15 round trips: the job and its status read, the lease, the run's
    # count, its input's name, done, its seconds and its end (each a MULTI with an EXPIRE per batch key). The stage's
    # two runs, 124 and a message (LPUSH, PUBLISH) per batch: discovery, the fan-out, the wait and assemble with its
    # issues. One command per post or per issue would add 120 or more.
    assert len(of_batches) <= 56 * batches, Counter(w[0].upper() for w in of_batches)
    assert len(counted) - len(of_batches) <= 2 * (batches + 1) + 130, Counter(w[0].upper() for w in counted)
