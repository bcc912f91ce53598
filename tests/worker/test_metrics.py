"""Tier 2: the metrics, the timings and the JSON logs of real jobs on a real worker and Redis.

Two identical jobs run one after the other on a prefork worker in multiprocess mode; its exporter and the API's
/metrics are scraped as Prometheus would, and the numbers checked against the jobs' own state.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.cli.local_services import free_port
from pipeline.models import JobStatus, StageStatus
from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore
from tests.conftest import DEMO_REPO, ApiServer, CallbackServer, Workers, wait_job
from worker.queues import QUEUES

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def names(samples: Samples) -> set[str]:
    return {n for n, _ in samples}


def test_metrics_timings_and_json_logs_of_two_identical_jobs(
        settings: Settings, workers: Workers, store: JobStore, tmp_path: Path,
        api_factory: Callable[[Settings], ApiServer], callback_server: Callable[..., CallbackServer]) -> None:
    port = free_port()
    worker_settings = settings.with_(embed_batch=4, metrics_port=port, metrics_host="127.0.0.1", max_retries=2,
                                     retry_backoff_max_s=1, prometheus_multiproc_dir=str(tmp_path / "prom"),
                                     log_format="json")
    (tmp_path / "prom").mkdir()
    api = api_factory(settings)
    before = scrape(f"{api.url}/metrics")

    # Submitted before any worker runs: the API's collector sees them waiting in their queue. The first one's
    # folder is gone when a worker takes it: its fetch fails for good (dead-lettered).
    gone = tmp_path / "gone"
    shutil.copytree(DEMO_REPO, gone)
    for job_id, source in (("m-0", gone), ("m-1", DEMO_REPO)):
        r = api.client.post("/jobs", json={"task": "process-all", "source": str(source), "job_id": job_id})
        assert r.status_code == 202, r.text
    shutil.rmtree(gone)
    waiting = scrape(f"{api.url}/metrics")
    assert {dict(ls)["queue"] for n, ls in waiting if n == "repobuild_queue_depth"} == set(QUEUES)
    assert value(waiting, "repobuild_queue_depth") == 2
    assert value(waiting, "repobuild_jobs_submitted_total", task="process-all") == value(
        before, "repobuild_jobs_submitted_total", task="process-all") + 2

    workers.start(worker_settings, concurrency=2)
    failed = wait_job(store, "m-0")
    assert failed.status == JobStatus.FAILED and failed.error and failed.error["stage"] == "fetch", failed.error
    first = wait_job(store, "m-1")
    assert first.status == JobStatus.COMPLETED, first.error
    exporter = f"http://127.0.0.1:{port}/metrics"
    one = scrape(exporter)
    assert value(one, "repobuild_jobs_finished_total", task="process-all", status="completed") == 1
    assert value(one, "repobuild_jobs_finished_total", task="process-all", status="failed") == 1
    assert value(one, "repobuild_dead_letters_total", stage="fetch") == value(one, "repobuild_dead_letters_total") == 1
    # one observation per stage done, none for a stage twice; m-0 got as far as its notify (no callback)
    for stage in first.stages:
        assert value(one, "repobuild_stage_wall_seconds_count", task="process-all", stage=stage.name) == (
            2 if stage.name == "notify" else 1), stage.name
    assert value(one, "repobuild_stage_wall_seconds_count") == len(first.stages) + 1
    embed = first.stage("embed_text")
    assert embed.summary["batches"] > 1, embed.summary  # the point: a stage that fanned out
    assert value(one, "repobuild_batches_total", stage="embed_text") == embed.summary["batches"]
    assert value(one, "repobuild_task_seconds_count", stage="embed_text", kind="batch") == embed.summary["batches"]
    assert value(one, "repobuild_items_total", stage="parse") == (first.stage("parse").summary["posts"]
                                                                  + first.stage("parse").summary["medias"])
    assert value(one, "repobuild_cache_misses_total", cache="vectors") >= embed.summary["embedded"] > 0
    assert value(one, "repobuild_cache_hits_total", cache="vectors") >= embed.summary["cached"]
    assert value(one, "repobuild_tasks_running") == 0
    assert value(one, "repobuild_retries_total") == value(one, "repobuild_callback_failures_total") == 0

    # Timings: wall time from first start to done covers the batches, whichever processes ran them.
    view = api.client.get("/jobs/m-1").json()
    body = next(s for s in view["stages"] if s["name"] == "embed_text")
    batch_s = body["task_s"] - body["own_task_s"]
    assert batch_s > 0
    assert body["elapsed_s"] > body["own_task_s"]
    assert body["elapsed_s"] >= batch_s / 2  # two pool processes
    assert body["elapsed_s"] == pytest.approx(embed.wall_s(), abs=0.01)
    assert view["result"]["timings"]["embed_text"] == pytest.approx(body["elapsed_s"], abs=0.01)
    assert view["result"]["task_timings"]["embed_text"] == pytest.approx(body["task_s"], abs=0.01)
    wall_sum = value(one, "repobuild_stage_wall_seconds_sum", stage="embed_text")
    assert wall_sum == pytest.approx(body["elapsed_s"], abs=0.01)

    # The same repository again: every vector and every variant comes from the caches, no batch runs.
    r = api.client.post("/jobs", json={"task": "process-all", "source": str(DEMO_REPO), "job_id": "m-2"})
    assert r.status_code == 202, r.text
    second = wait_job(store, "m-2")
    assert second.status == JobStatus.COMPLETED, second.error
    two = scrape(exporter)
    assert value(two, "repobuild_jobs_finished_total", task="process-all", status="completed") == 2
    assert value(two, "repobuild_stage_wall_seconds_count") == len(first.stages) + 1 + len(second.stages)
    again = second.stage("embed_text").summary
    assert again["embedded"] == 0 and again["batches"] == 0, again
    assert value(two, "repobuild_batches_total", stage="embed_text") == embed.summary["batches"]
    hits = value(two, "repobuild_cache_hits_total", cache="vectors") - value(one, "repobuild_cache_hits_total",
                                                                              cache="vectors")
    images = second.stage("embed_images").summary
    assert hits == again["cached"] + images["images"] - images["processed"] > 0
    assert value(two, "repobuild_cache_misses_total", cache="vectors") == value(
        one, "repobuild_cache_misses_total", cache="vectors")
    assert value(two, "repobuild_cache_hits_total", cache="variants") - value(
        one, "repobuild_cache_hits_total", cache="variants") == images["images"] > 0

    # A callback that never answers 2xx: retried, then given up; the build stays completed.
    cb = callback_server([500] * 10)
    r = api.client.post("/jobs", json={"task": "process-all", "source": str(DEMO_REPO), "job_id": "m-3",
                                       "callback_url": cb.url})
    assert r.status_code == 202, r.text
    third = wait_job(store, "m-3")
    assert third.status == JobStatus.COMPLETED and third.stage("notify").status == StageStatus.FAILED
    three = scrape(exporter)
    assert value(three, "repobuild_callback_failures_total") == 1
    assert value(three, "repobuild_retries_total", stage="notify", kind="stage") == 2 == len(cb.requests) - 1
    assert value(three, "repobuild_retries_total") == 2
    assert value(three, "repobuild_dead_letters_total") == 1  # a callback is no build stage
    assert value(three, "repobuild_jobs_finished_total", status="completed") == 3

    after = scrape(f"{api.url}/metrics")
    assert value(after, "repobuild_queue_depth") == 0
    assert value(after, "repobuild_jobs_submitted_total", task="process-all") == value(
        before, "repobuild_jobs_submitted_total", task="process-all") + 4

    # JSON logs: one object a line with the four fields, Celery's own lines about a task included.
    lines = Path(workers.started[0].log_path or "").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert all({"job_id", "stage", "attempt", "task_id", "message", "level", "ts"} <= set(r) for r in records)
    # what is not JSON is only what Python prints before logging is set up (a warning to run as root)
    assert not [line for line in lines if not line.startswith("{") and ("Task " in line or "m-1" in line)]
    ours = [r for r in records if r["job_id"] == "m-1" and r["stage"] == "embed_text"]
    assert any("embed_text: " in r["message"] for r in ours)
    assert all(r["task_id"] and r["attempt"] == 1 for r in ours), ours[:3]
    done = [r for r in ours if r["logger"] == "celery.app.trace" and "succeeded" in r["message"]]
    assert done and all(r["task_id"] in r["message"] for r in done)
