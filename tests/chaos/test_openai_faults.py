"""Chaos: the OpenAI-compatible embeddings server misbehaves under a running job.

Round after round (one job each, on texts no earlier round embedded), the fake server answers a seeded
sequence of faults at seeded moments: 429 with `Retry-After`, 500, a hang past the client's timeout, a
connection closed without an answer. Each is retried (Retry-After honoured) and the job completes with every
input embedded exactly once. Then an outage that outlasts the retry bound: the job fails naming the stage and
the cause, and no secret; `POST /jobs/<id>/retry` after the server recovers sends only the inputs not yet
embedded (read from what the server received), and completes.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.stages.embed_text import batch_inputs
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.jobs import JobStore
from pipeline.stores.vectors import VectorCache, text_key
from tests.chaos.conftest import Chaos
from tests.conftest import DEMO_REPO, ApiServer, Workers, wait_job
from tests.fakes.openai_server import Failure, OpenAIServer, RecordedRequest, expected_vector

API_KEY = "sk-chaos-5be1d0c9a7f2"
DIM = 16
MODEL_ID = f"openai:text-embedding-3-small@{DIM}"
TIMEOUT_S = 1.0
ATTEMPTS = 3  # per request
TASK_RETRIES = 2  # per batch task, above the request's attempts
RETRY_AFTER_S = 1
EMBEDDINGS = "/v1/embeddings"
# A recoverable round never scripts more faults than one batch could take and still succeed.
MAX_FAULTS_PER_ROUND = ATTEMPTS * (TASK_RETRIES + 1) - 1
MAX_PASSES = 4  # a round sends more batches than this (the demo repository makes ~7 of 4 inputs)


@pytest.fixture
def llm() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=API_KEY) as server:
        yield server


def corpus(tmp_path: Path, name: str) -> Path:
    """The demo repository with a line of its own in every post, so no vector of an earlier round is reused."""
    root = tmp_path / name
    shutil.copytree(DEMO_REPO, root)
    for post in root.rglob("*.md"):
        post.write_text(post.read_text() + f"\n\nThis copy belongs to {name}.\n")
    return root


def embed_inputs(settings: Settings, job_id: str) -> set[str]:
    """Every input of the job's embed_text batches (the posts of its batch files, chunked as the batches chunk them);
    image captions come on top."""
    store = LocalArtifactStore(settings.artifacts)
    texts: set[str] = set()
    for key in store.list(f"jobs/{job_id}/embed_text/batches"):
        texts.update(text for _item, text in batch_inputs(settings, store, store.get_json(key)))
    return texts


def served(requests: list[RecordedRequest]) -> Counter[str]:
    """How often each input was answered with a vector."""
    return Counter(t for r in requests if r.fault is None for t in r.inputs)


def requested(requests: list[RecordedRequest]) -> set[str]:
    return {t for r in requests for t in r.inputs}


def submit(api: ApiServer, job_id: str, source: Path) -> None:
    r = api.client.post("/jobs", json={"task": "process-all", "source": str(source), "job_id": job_id})
    assert r.status_code == 202, r.text


def check_vectors(settings: Settings, texts: set[str]) -> None:
    cache = VectorCache(LocalArtifactStore(settings.artifacts), MODEL_ID, DIM)
    for text in texts:
        assert np.allclose(cache.get(text_key(text)), expected_vector(text, DIM), atol=1e-6), text[:60]


def test_openai_faults_are_retried_then_an_outage_fails_and_retry_resumes(
        settings: Settings, workers: Workers, store: JobStore, tmp_path: Path, llm: OpenAIServer, chaos: Chaos,
        api_factory: Callable[[Settings], ApiServer]) -> None:
    settings = settings.with_(embed_provider="openai", openai_base_url=llm.base_url, openai_api_key=API_KEY,
                              openai_dimensions=DIM, openai_timeout_s=TIMEOUT_S, openai_max_attempts=ATTEMPTS,
                              max_retries=TASK_RETRIES, embed_batch=4)
    workers.start(settings)
    api = api_factory(settings)
    rng = chaos.rng
    kinds = ("429", "500", "hang", "drop")
    records = {kind: chaos.record(f"openai {kind}") for kind in kinds}

    # 1. recoverable faults: every kind at least once per round, in a seeded order at seeded moments
    for round_no in range(chaos.n(1, 6)):
        job_id = f"faults-{round_no}"
        script = list(kinds) + [rng.choice(kinds) for _ in range(rng.randint(0, MAX_FAULTS_PER_ROUND - len(kinds)))]
        rng.shuffle(script)
        # Requests served between faults, few in all: every fault must meet a request of this round (each batch
        # succeeds once, and a fault always brings another request, so fewer passes than batches suffice).
        passes = [0] * len(script)
        for _ in range(rng.randint(0, MAX_PASSES)):
            passes[rng.randrange(len(script))] += 1
        for kind, after in zip(script, passes, strict=True):
            if kind == "429":
                llm.fail_next(429, retry_after=str(RETRY_AFTER_S), after=after)
            elif kind == "500":
                llm.fail_next(500, after=after)
            elif kind == "hang":
                llm.hang_next(TIMEOUT_S + 1.0, after=after)
            else:
                llm.drop_next(after=after)
        first = len(llm.requests_to(EMBEDDINGS))
        submit(api, job_id, corpus(tmp_path, job_id))
        job = wait_job(store, job_id, timeout=120)
        assert job.status == JobStatus.COMPLETED, job.error
        requests = llm.requests_to(EMBEDDINGS)[first:]
        met = Counter(r.fault for r in requests if r.fault is not None)
        assert met == Counter(script), f"scripted {Counter(script)}, the server saw {met}"
        texts = requested(requests)
        assert embed_inputs(settings, job_id) <= texts
        answered = served(requests)
        # every input embedded, and none twice: a retry re-sends only what got no vector
        assert set(answered) == texts and set(answered.values()) == {1}, answered
        check_vectors(settings, texts)
        for i, r in enumerate(requests):
            if r.fault is None:
                continue
            again = next((later for later in requests[i + 1:] if later.inputs == r.inputs), None)
            assert again is not None, f"the batch that met {r.fault} was never sent again"
            # this request's place among the attempts of one call (a batch gets no vector before it succeeds)
            attempt = sum(1 for earlier in requests[:i] if earlier.inputs == r.inputs) % ATTEMPTS + 1
            if r.fault == "429" and attempt < ATTEMPTS:
                # Retry-After honoured: the same inputs come back no sooner than the server asked. (After a call's
                # last attempt the batch task's own jittered countdown decides, which does not read the header.)
                assert again.at - r.at >= RETRY_AFTER_S - 0.05, again.at - r.at
            rec = records[r.fault]
            rec.injected += 1
            ok = next(later for later in requests[i + 1:] if later.inputs == r.inputs and later.fault is None)
            rec.resume_s.append(round(ok.at - r.at, 3))
            rec.recomputed.append(0)
        for rec in records.values():
            rec.jobs_submitted += 1
            rec.jobs_completed += 1
        summary = job.stage("embed_text").summary
        assert summary["embedded"] == len(embed_inputs(settings, job_id)) and summary["cached"] == 0, summary

    # 2. an outage past the bound: the job fails, clearly; a retry once it is over resumes where it stopped
    outage = chaos.record("openai outage past the retry bound")
    kind = rng.choice(kinds)
    failure = {"429": Failure(429, {"Retry-After": "0.2"}, "rate limited"),
               "500": Failure(500, {}, "upstream exploded"),
               "hang": Failure(200, {}, "", "hang", TIMEOUT_S + 1.0),
               "drop": Failure(0, {}, "", "drop")}[kind]
    cause = {"429": "HTTP 429", "500": "HTTP 500", "hang": "timed out", "drop": "connection error"}[kind]
    job_id = "outage"
    source = corpus(tmp_path, job_id)
    first = len(llm.requests_to(EMBEDDINGS))
    good = rng.randint(1, 3)  # batches answered before the outage starts
    llm.fail_all(failure, after=good)
    submit(api, job_id, source)
    failed = wait_job(store, job_id, timeout=120)
    assert failed.status == JobStatus.FAILED, failed.status
    error = failed.error or {}
    assert error.get("stage") == "embed_text", error
    assert "embed_text" in error["message"] and cause in error["message"], error
    shown = api.client.get(f"/jobs/{job_id}").text
    assert API_KEY not in json.dumps(error) and API_KEY not in shown
    before = llm.requests_to(EMBEDDINGS)[first:]
    embedded_before = served(before)
    assert len(embedded_before) > 0, "no batch got through before the outage: nothing to resume from"
    outage.injected += 1
    outage.jobs_submitted += 1
    outage.notes.append(f"{kind} until the bound: {sum(1 for r in before if r.fault)} failed requests, "
                        f"{len(embedded_before)} inputs embedded before")

    llm.clear_faults()
    cleared = time.monotonic()
    mark = len(llm.requests_to(EMBEDDINGS))
    answer = api.client.post(f"/jobs/{job_id}/retry")
    assert answer.status_code == 202, answer.text
    job = wait_job(store, job_id, timeout=120)
    assert job.status == JobStatus.COMPLETED, job.error
    resumed = llm.requests_to(EMBEDDINGS)[mark:]
    sent_again = requested(resumed)
    texts = requested(before) | sent_again
    assert embed_inputs(settings, job_id) <= texts
    # only the inputs without a vector were sent again, and together they are all of them
    assert not sent_again & set(embedded_before), sorted(sent_again & set(embedded_before))[:3]
    assert set(embedded_before) | set(served(resumed)) == texts
    check_vectors(settings, texts)
    outage.jobs_completed += 1
    outage.recomputed.append(len(sent_again & set(embedded_before)))
    if resumed:
        outage.resume_s.append(round(resumed[0].at - cleared, 3))
