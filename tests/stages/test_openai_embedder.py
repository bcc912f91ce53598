"""OpenAIEmbedder against a real OpenAI-compatible server on 127.0.0.1: batching, retries, errors."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pipeline.embedders.openai_compat import OpenAIEmbedder, plan_batches
from pipeline.embedders.text import TextEmbedder
from pipeline.errors import PermanentError, TransientError
from pipeline.http.openai_retry import retry_after_s
from tests.fakes.openai_server import OpenAIServer, expected_vector

EMBEDDINGS = "/v1/embeddings"


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as srv:
        yield srv


def make(server: OpenAIServer, **kwargs: Any) -> OpenAIEmbedder:
    options: dict[str, Any] = {"model": "local-embed", "api_key": "sk-test", "backoff_s": 0.01, **kwargs}
    return OpenAIEmbedder(base_url=server.base_url, **options)


def gap(server: OpenAIServer, first: int, second: int) -> float:
    reqs = server.requests_to(EMBEDDINGS)
    return reqs[second].at - reqs[first].at


def assert_expected(vectors: np.ndarray, texts: list[str], dim: int) -> None:
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(texts), dim)
    np.testing.assert_allclose(vectors, np.stack([expected_vector(t, dim) for t in texts]), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_vectors_in_input_order_normalised(server: OpenAIServer) -> None:
    embedder: TextEmbedder = make(server)
    texts = ["alpha", "beta gamma", "delta", "alpha"]
    vectors = embedder.embed(texts)
    assert_expected(vectors, texts, 32)
    assert embedder.dim == 32
    assert embedder.model_id == "openai:local-embed"
    (req,) = server.requests_to(EMBEDDINGS)  # dim came from the answer: no probe request
    assert req.body["input"] == texts
    assert req.body["model"] == "local-embed"
    # The SDK asks for base64 by default; the server's base64 path is what production traffic exercises.
    assert req.body["encoding_format"] == "base64"
    assert "dimensions" not in req.body
    assert req.headers["authorization"] == "Bearer sk-test"


def test_results_are_sorted_by_index(server: OpenAIServer) -> None:
    server.reverse_order = True
    texts = [f"text {i}" for i in range(7)]
    assert_expected(make(server).embed(texts), texts, 32)


def test_dimensions_are_sent_and_named_in_model_id(server: OpenAIServer) -> None:
    embedder = make(server, dimensions=12)
    assert embedder.dim == 12
    assert embedder.model_id == "openai:local-embed@12"
    assert server.requests == []
    assert_expected(embedder.embed(["one", "two"]), ["one", "two"], 12)
    assert server.requests_to(EMBEDDINGS)[0].body["dimensions"] == 12
    assert embedder.embed([]).shape == (0, 12)


def test_dim_of_unknown_model_is_probed_once_per_process(server: OpenAIServer) -> None:
    assert make(server, model="probe-me").dim == 32
    assert len(server.requests_to(EMBEDDINGS)) == 1
    # A worker builds an embedder per batch; the second one must not probe again.
    assert make(server, model="probe-me").dim == 32
    assert len(server.requests_to(EMBEDDINGS)) == 1


def test_dim_of_openai_model_needs_no_request(server: OpenAIServer) -> None:
    embedder = make(server, model="text-embedding-3-small")
    assert embedder.dim == 1536
    assert server.requests == []
    assert embedder.embed(["x"]).shape == (1, 1536)


def test_dimension_mismatch_is_permanent(server: OpenAIServer) -> None:
    # The name promises 1536 dimensions; a server answering 8 under that name would poison the vector cache.
    server.force_dim = 8
    with pytest.raises(PermanentError, match="returned 8-dimensional vectors, expected 1536; set REPOBUILD_OPENAI"):
        make(server, model="text-embedding-3-small").embed(["a"])


def test_5000_inputs_make_three_requests(server: OpenAIServer) -> None:
    texts = [f"post {i}" for i in range(5000)]
    vectors = make(server, dimensions=4).embed(texts)
    assert [len(r.body["input"]) for r in server.requests_to(EMBEDDINGS)] == [2048, 2048, 904]
    assert_expected(vectors, texts, 4)


def test_batches_respect_the_character_budget(server: OpenAIServer) -> None:
    texts = [str(i) * 60_000 for i in range(10)]
    vectors = make(server, dimensions=4).embed(texts)
    assert [len(r.body["input"]) for r in server.requests_to(EMBEDDINGS)] == [4, 4, 2]
    assert_expected(vectors, texts, 4)


def test_plan_batches_limits() -> None:
    assert plan_batches(["a" * 10, "b" * 300, "c", "d"], max_inputs=2, max_chars=100) == [(0, 1), (1, 2), (2, 4)]
    assert plan_batches(["x"] * 5, max_inputs=2) == [(0, 2), (2, 4), (4, 5)]
    assert plan_batches([]) == []


def test_429_waits_for_retry_after_then_succeeds(server: OpenAIServer) -> None:
    server.fail_next(429, retry_after="1")
    # No backoff of its own: only the header can make it wait a second.
    vectors = make(server, backoff_s=0.0).embed(["a", "b"])
    assert_expected(vectors, ["a", "b"], 32)
    assert len(server.requests_to(EMBEDDINGS)) == 2
    assert gap(server, 0, 1) >= 0.95


def test_retry_after_ms_is_honoured(server: OpenAIServer) -> None:
    server.fail_next(503, retry_after_ms="300")
    make(server, backoff_s=0.0).embed(["a"])
    assert len(server.requests_to(EMBEDDINGS)) == 2
    assert gap(server, 0, 1) >= 0.28


def test_retry_after_is_capped(server: OpenAIServer) -> None:
    server.fail_next(429, retry_after="30")
    started = time.monotonic()
    make(server, backoff_s=0.0, max_retry_after_s=0.2).embed(["a"])
    assert len(server.requests_to(EMBEDDINGS)) == 2
    assert 0.19 <= gap(server, 0, 1) and time.monotonic() - started < 5


def test_500_twice_then_success(server: OpenAIServer) -> None:
    server.fail_next(500, times=2)
    vectors = make(server).embed(["x", "y", "z"])
    assert_expected(vectors, ["x", "y", "z"], 32)
    assert len(server.requests_to(EMBEDDINGS)) == 3


def test_persistent_503_names_the_batch(server: OpenAIServer) -> None:
    server.fail_next(503, after=1, times=100, message="upstream overloaded")
    embedder = make(server, max_attempts=3, max_batch_inputs=2)
    with pytest.raises(TransientError) as info:
        embedder.embed(["a", "b", "c", "d"])
    assert str(info.value) == ("embeddings batch 2 of 2 (inputs 2-3): HTTP 503 (upstream overloaded) "
                               "after 3 attempts")
    assert len(server.requests_to(EMBEDDINGS)) == 1 + 3


def test_a_429_that_outlasts_the_attempts_hands_its_retry_after_to_the_task(server: OpenAIServer) -> None:
    server.fail_next(429, retry_after="0.05", times=2)
    with pytest.raises(TransientError) as info:
        make(server, max_attempts=2).embed(["a"])
    assert info.value.retry_after_s == pytest.approx(0.05)  # the task's retry waits at least this (worker/policy.py)
    server.fail_next(503, times=2)
    with pytest.raises(TransientError) as plain:
        make(server, max_attempts=2).embed(["b"])
    assert plain.value.retry_after_s is None


def test_401_is_permanent_and_not_retried(server: OpenAIServer) -> None:
    server.fail_next(401, message="Incorrect API key provided: sk-test-secret-value")
    with pytest.raises(PermanentError) as info:
        make(server, api_key="sk-test-secret-value").embed(["a"])
    message = str(info.value)
    assert message.startswith("embeddings batch 1 of 1 (inputs 0-0): HTTP 401: Incorrect API key provided")
    assert "sk-test-secret-value" not in message
    assert len(server.requests_to(EMBEDDINGS)) == 1


def test_400_carries_the_servers_message(server: OpenAIServer) -> None:
    server.fail_next(400, message="This model's maximum context length is 8192 tokens")
    with pytest.raises(PermanentError, match="HTTP 400: This model's maximum context length is 8192 tokens"):
        make(server).embed(["a"])
    assert len(server.requests_to(EMBEDDINGS)) == 1


def test_wrong_api_key_is_refused() -> None:
    with OpenAIServer(api_key="sk-right-key-0001") as srv:
        with pytest.raises(PermanentError, match="HTTP 401: Incorrect API key provided"):
            make(srv, api_key="sk-wrong-key-0002").embed(["a"])
        assert len(srv.requests_to(EMBEDDINGS)) == 1
        assert make(srv, api_key="sk-right-key-0001").embed(["a"]).shape == (1, 32)


def test_short_vector_count_is_permanent(server: OpenAIServer) -> None:
    server.drop_embeddings = 1
    with pytest.raises(PermanentError, match="returned 2 embeddings for 3 inputs"):
        make(server).embed(["a", "b", "c"])


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    embedder = OpenAIEmbedder(base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key="k", dimensions=4,
                              max_attempts=2, backoff_s=0.01)
    with pytest.raises(TransientError, match=r"embeddings batch 1 of 1 \(inputs 0-0\): connection error .* "
                                             r"after 2 attempts"):
        embedder.embed(["a"])


def test_retry_after_header_forms() -> None:
    assert retry_after_s({"Retry-After": "2"}) == 2.0
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_s({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_s({"Retry-After": "soon"}) is None
    assert retry_after_s({}) is None
