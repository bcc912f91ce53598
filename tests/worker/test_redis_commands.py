"""The Redis commands a stage sends grow with its batches, not with its items: the parse task, run as a worker
runs it, on a private Redis watched with MONITOR.

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

from pipeline.catalog import SOURCE_TREE
from pipeline.models import JobSpec, StageStatus
from pipeline.settings import Settings
from pipeline.stages import parse
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.jobs_redis import RedisJobStore
from worker.repobuild_app import RepobuildCelery
from worker.stage_task import StageTask

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
    """The lease keeper's renewals and should_yield's status reads: their number is the run's length in time."""
    lease = f"{settings.key_prefix}lease:{job_id}:parse"
    renew = words[0].upper() in ("EVALSHA", "EVAL") and words[2:4] == ["1", lease]
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

    with Monitor(settings.redis_url or "") as monitor:
        assert task.execute(job_id, parse.run, False) == "done"
    shutil.rmtree(tree)

    parse_state = store.stage(job_id, "parse")
    assert parse_state.status == StageStatus.DONE and parse_state.summary["posts"] == POSTS
    assert store.issue_count(job_id) >= POSTS  # the issues were recorded, and not one command each
    counted = [w for w in monitor.commands if not periodic(w, settings, job_id)]
    batches = POSTS // BATCH
    notes = [w for w in counted if "item:parse" in w]
    assert len(notes) == batches, Counter(w[0] for w in notes)
    # Per batch, 7: the input's name, the cursor's checkpoint, the progress and its event (MULTI, XADD, EXPIRE,
    # EXEC). The rest is the task's fixed cost, 49 when this was written: the job read, the lease, the start and
    # its events, done, the next stage's message. One command per post or per issue would add 116 or more.
    by_kind = Counter(w[0].upper() for w in counted)
    assert len(counted) <= 8 * batches + 60, by_kind
