"""Tier 3: kill -9 the whole worker mid-stage; a new worker finishes the job from the stage's cursor."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.models import JobStatus, StageStatus
from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore, JobView
from tests.conftest import CORPORA, ApiServer, Workers, wait_job

pytestmark = pytest.mark.e2e

VOLATILE_MANIFEST = {"revision", "jobId", "createdAt"}
# These tests are about parse and the chain; embedding ~930 posts would only make them slow.
PARSE_ONLY = {"skipEmbeddings": True}


def large_corpus(tmp_path: Path) -> Path:
    """Both corpora side by side: ~930 posts of real, messy markdown in 30+ languages."""
    root = tmp_path / "corpus"
    for name in ("opensource-guide", "til"):
        shutil.copytree(CORPORA / name, root / name)
    return root


def bundle_files(bundle: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(bundle.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "manifest.json":
                m = json.loads(data)
                data = json.dumps({k: v for k, v in m.items() if k not in VOLATILE_MANIFEST}, sort_keys=True).encode()
            out[p.relative_to(bundle).as_posix()] = data
    return out


def test_kill9_during_parse_resumes_from_cursor(settings: Settings, workers: Workers, store: JobStore,
                                                tmp_path: Path,
                                                api_factory: Callable[[Settings], ApiServer]) -> None:
    # parse renders its own batches in its task (fan-out off), a checkpoint after each: the cursor this test
    # resumes from (a kill among fanned-out batches is test_worker_kills' `parse:batch` moment)
    settings = settings.with_(parse_batch=20, fan_out=False)
    corpus = large_corpus(tmp_path)
    api = api_factory(settings)

    # reference: an uninterrupted run
    first = workers.start(settings)
    api.client.post("/jobs", json={"task": "process-all", "source": str(corpus), "job_id": "ref",
                                   "options": PARSE_ONLY})
    ref = wait_job(store, "ref", timeout=300)
    assert ref.status == JobStatus.COMPLETED, ref.error
    first.stop()

    victim = workers.start(settings)
    api.client.post("/jobs", json={"task": "process-all", "source": str(corpus), "job_id": "killed",
                                   "options": PARSE_ONLY})

    def mid_parse(job: JobView) -> bool:
        stage = store.stage("killed", "parse")
        return stage.status == StageStatus.RUNNING and (stage.cursor or {}).get("next", 0) >= 3  # batches

    wait_job(store, "killed", timeout=300, until=mid_parse)
    victim.kill9()
    killed_at = time.time()
    cursor_at_kill = store.stage("killed", "parse").cursor
    assert cursor_at_kill is not None

    workers.start(settings)
    job = wait_job(store, "killed", timeout=300)
    assert job.status == JobStatus.COMPLETED, job.error
    parse = job.stage("parse")
    assert parse.attempts == 2
    # resumed where the dead worker's last checkpoint was, not from zero
    assert parse.resumed_from is not None and parse.resumed_from["next"] >= 3
    assert parse.resumed_from["next"] >= cursor_at_kill["next"]
    resumed = [ev for _id, ev in store.events("killed") if ev["type"] == "resumed" and ev.get("stage") == "parse"]
    assert resumed
    print(f"\nresume after kill -9: {float(resumed[0]['ts']) - killed_at:.1f}s; "
          f"parse cursor at kill {cursor_at_kill}; posts {job.result and job.result['counts']}")

    a = bundle_files(Path(settings.output) / "ref")
    b = bundle_files(Path(settings.output) / "killed")
    assert a.keys() == b.keys()
    different = [k for k in a if a[k] != b[k]]
    assert different == []


def test_lost_message_is_redriven(settings: Settings, workers: Workers, store: JobStore,
                                  api_factory: Callable[[Settings], ApiServer], redis_server: object) -> None:
    """A queued job whose message vanished from the broker (celery#6631, a Redis restart) still runs."""
    import redis

    from worker.queues import QUEUES

    api = api_factory(settings)
    api.client.post("/jobs", json={"task": "process-all", "source": str(CORPORA / "til"), "job_id": "lost",
                                   "options": PARSE_ONLY})
    broker = redis.Redis.from_url(settings.redis_url or "")
    assert sum(int(broker.llen(q)) for q in QUEUES) == 1
    broker.delete(*QUEUES)
    workers.start(settings)
    job = wait_job(store, "lost", timeout=120)
    assert job.status == JobStatus.COMPLETED, job.error
    assert any(ev["type"] == "redrive" for _id, ev in store.events("lost"))


def english_guide(tmp_path: Path) -> Path:
    """Six English articles of opensource-guide: ~100 passages, a dozen embedding batches of 8."""
    root = tmp_path / "guide"
    root.mkdir()
    for post in sorted((CORPORA / "opensource-guide" / "_articles").glob("*.md"))[:6]:
        shutil.copy2(post, root / post.name)
    return root


def test_kill9_during_embed_text_resumes_from_batches_then_second_job_hits_the_cache(
        settings: Settings, workers: Workers, store: JobStore, tmp_path: Path,
        api_factory: Callable[[Settings], ApiServer]) -> None:
    settings = settings.with_(embed_batch=8, task_budget_s=10)
    corpus = english_guide(tmp_path)
    api = api_factory(settings)
    victim = workers.start(settings)
    api.client.post("/jobs", json={"task": "process-all", "source": str(corpus), "job_id": "emb"})
    batches = store.batches("emb", "embed_text")

    def some_batches_done(job: JobView) -> bool:
        return len(batches.done()) >= 4

    wait_job(store, "emb", timeout=300, until=some_batches_done)
    victim.kill9()
    done_at_kill = batches.done()
    total = int((store.stage("emb", "embed_text").cursor or {})["batches"])
    assert len(done_at_kill) < total, "the stage finished before the kill; nothing was tested"

    workers.start(settings)
    job = wait_job(store, "emb", timeout=300)
    assert job.status == JobStatus.COMPLETED, job.error
    runs = batches.runs()
    # the batches finished before the kill were not embedded again; every batch was finished once
    assert all(runs[n] == 1 for n in done_at_kill), {n: runs[n] for n in done_at_kill}
    assert batches.done() == set(range(total))
    embed = job.stage("embed_text").summary
    assert embed["posts"] == 6 and embed["chunks"] > 50 and embed["cached"] == 0
    bundle = Path(settings.output) / "emb"
    vectors = json.loads((bundle / "posts-embedding-hash-map.json").read_text())
    assert len(vectors) == 6 and all(len(v) == 384 for v in vectors.values())

    # a second job on the same repository embeds nothing: every vector comes from the shared cache
    api.client.post("/jobs", json={"task": "process-all", "source": str(corpus), "job_id": "emb-again"})
    again = wait_job(store, "emb-again", timeout=300)
    assert again.status == JobStatus.COMPLETED, again.error
    summary = again.stage("embed_text").summary
    assert summary["embedded"] == 0 and summary["batches"] == 0
    assert summary["cached"] == embed["posts"] + embed["chunks"]
    assert json.loads((Path(settings.output) / "emb-again" / "posts-embedding-hash-map.json").read_text()) == vectors
    print(f"\nembed_text: {len(done_at_kill)}/{total} batches done at kill -9, runs after resume {runs}")
