"""Tier 2: one job's embed_text batches run at the same time on several pool processes of a real worker.

The text embedder is the local OpenAI-compatible server, slow on purpose (each embeddings request answered after
a second, as a remote model under load): batches are waiting on the network, not the CPU, so one job's batches
must overlap on the worker's pool. What is checked is causal, not timed: the server itself saw requests being
answered at once, and the worker's log names several pool processes that finished batches of that one job.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.catalog import job_key
from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.jobs import JobStore
from tests.conftest import DEMO_REPO, ApiServer, Workers, wait_job
from tests.fakes.openai_server import OpenAIServer

pytestmark = pytest.mark.timeout(240)

BATCH_DONE = re.compile(r"/(ForkPoolWorker-\d+)\] Task repobuild\.batch\[[^\]]+\] succeeded")


def test_one_jobs_embedding_batches_run_on_several_pool_processes_at_once(
        settings: Settings, workers: Workers, store: JobStore, tmp_path: Path,
        api_factory: Callable[[Settings], ApiServer]) -> None:
    with OpenAIServer(latency_s=1.0) as server:
        # batches of 2 inputs: the demo repository's posts and passages make many batches to spread
        settings = settings.with_(embed_provider="openai", openai_base_url=server.base_url, openai_dimensions=8,
                                  embed_batch=2)
        worker = workers.start(settings, concurrency=4)
        api = api_factory(settings)
        # without its images, so that image captions (embedded by the same server) add no requests of their own
        source = tmp_path / "demo"
        shutil.copytree(DEMO_REPO, source, ignore=shutil.ignore_patterns("images"))
        r = api.client.post("/jobs", json={"task": "process-all", "source": str(source), "job_id": "fan"})
        assert r.status_code == 202, r.text
        job = wait_job(store, "fan", timeout=200)
        assert job.status == JobStatus.COMPLETED, job.error

        batches = int(LocalArtifactStore(settings.artifacts).get_json(
            job_key("fan", "embed_text", "inputs.json"))["batches"])
        requests = server.requests_to("/v1/embeddings")
        assert batches >= 4 and len(requests) == batches  # one request per batch, none sent twice
        # the server answered several of this job's requests at the same time...
        assert server.peak_in_flight >= 2, server.peak_in_flight
        # ...because several pool processes of the one worker each ran batches of it
        pools = set(BATCH_DONE.findall(Path(worker.log_path or "").read_text()))
        assert len(pools) >= 2, pools
