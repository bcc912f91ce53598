"""Text embeddings from an OpenAI-compatible `/v1/embeddings` endpoint (OpenAI itself, vLLM, Ollama, LiteLLM...).

Requests are cut to the API's limits (2048 inputs, and a character budget standing in for the 300k-token
cap, since we have no tokenizer for the remote model); each one goes through pipeline.http.openai_retry.
The base URL is operator configuration (REPOBUILD_OPENAI_BASE_URL), which no request can set, so these requests
are not held to the outbound address policy of pipeline/http/address_policy.py.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import openai
from openai.types import CreateEmbeddingResponse

from pipeline.embedders.text import Vectors
from pipeline.errors import PermanentError
from pipeline.http.openai_retry import RetryPolicy, call_with_retry

MAX_BATCH_INPUTS = 2048
# ~4 characters a token in English prose: 250k characters stays under the 300k-token request cap even for
# text that tokenizes twice as densely.
MAX_BATCH_CHARS = 250_000

# Output sizes of OpenAI's own models, so `dim` costs no request for them; any other model is probed once.
KNOWN_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}

# (base_url, model) -> dim: workers build an embedder per batch, and each needs `dim` before embedding.
_probed: dict[tuple[str, str], int] = {}
_probed_lock = threading.Lock()


def plan_batches(texts: Sequence[str], max_inputs: int = MAX_BATCH_INPUTS,
                 max_chars: int = MAX_BATCH_CHARS) -> list[tuple[int, int]]:
    """[start, end) ranges, in order, each within both limits; a text longer than max_chars goes alone."""
    ranges: list[tuple[int, int]] = []
    start, chars = 0, 0
    for i, text in enumerate(texts):
        if i > start and (i - start >= max_inputs or chars + len(text) > max_chars):
            ranges.append((start, i))
            start, chars = i, 0
        chars += len(text)
    if start < len(texts):
        ranges.append((start, len(texts)))
    return ranges


class OpenAIEmbedder:
    """TextEmbedder over the `openai` SDK; vectors are L2-normalised here whatever the server returns."""

    def __init__(self, *, base_url: str | None = None, model: str = "text-embedding-3-small", api_key: str,
                 dimensions: int | None = None, max_attempts: int = 6, backoff_s: float = 0.5,
                 max_retry_after_s: float = 60.0, timeout_s: float = 120.0,
                 max_batch_inputs: int = MAX_BATCH_INPUTS, max_batch_chars: int = MAX_BATCH_CHARS) -> None:
        if dimensions is not None and dimensions <= 0:
            raise PermanentError(f"embedding dimensions must be positive, not {dimensions}")
        self.model = model
        self.dimensions = dimensions
        self.model_id = f"openai:{model}" + (f"@{dimensions}" if dimensions else "")
        self.max_batch_inputs = max(1, max_batch_inputs)
        self.max_batch_chars = max(1, max_batch_chars)
        self.policy = RetryPolicy(max_attempts=max_attempts, base_delay_s=backoff_s,
                                  max_retry_after_s=max_retry_after_s)
        self._api_key = api_key
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s)
        self._probe_key = (str(self._client.base_url), model)
        self._dim: int | None = dimensions or KNOWN_DIMS.get(model)

    @property
    def dim(self) -> int:
        """Known from `dimensions`, the model's name or an earlier call; else one short probe request."""
        if self._dim is None:
            with _probed_lock:
                known = _probed.get(self._probe_key)
            if known is None:
                known = int(self._request(["dimension probe"], "embeddings dimension probe").shape[1])
                with _probed_lock:
                    _probed[self._probe_key] = known
            self._dim = known
        return self._dim

    @dim.setter
    def dim(self, value: int) -> None:
        self._dim = value

    def close(self) -> None:
        self._client.close()

    def embed(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ranges = plan_batches(texts, self.max_batch_inputs, self.max_batch_chars)
        parts: list[Vectors] = []
        for n, (start, end) in enumerate(ranges, 1):
            what = f"embeddings batch {n} of {len(ranges)} (inputs {start}-{end - 1})"
            parts.append(self._request(texts[start:end], what))
        out: Vectors = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        return out

    def _create(self, batch: list[str]) -> CreateEmbeddingResponse:
        # `dimensions` is left out rather than sent as null: many compatible servers reject unknown nulls.
        if self.dimensions is None:
            return self._client.embeddings.create(model=self.model, input=batch)
        return self._client.embeddings.create(model=self.model, input=batch, dimensions=self.dimensions)

    def _request(self, batch: list[str], what: str) -> Vectors:
        def call() -> CreateEmbeddingResponse:
            try:
                return self._create(batch)
            except ValueError as exc:
                # The SDK's base64 decoder raises ValueError on a 200 with no data or a corrupt payload.
                raise PermanentError(f"{what}: unusable response: {exc}") from exc

        response = call_with_retry(call, what=what, policy=self.policy, secrets=[self._api_key])
        return self._matrix(response, len(batch), what)

    def _matrix(self, response: CreateEmbeddingResponse, count: int, what: str) -> Vectors:
        data = sorted(response.data, key=lambda d: d.index)
        indices = [d.index for d in data]
        if indices != list(range(count)):
            raise PermanentError(f"{what}: the server returned {len(data)} embeddings for {count} inputs "
                                 f"(indices {_summary(indices)})")
        sizes = {len(d.embedding) for d in data}
        if len(sizes) != 1:
            raise PermanentError(f"{what}: the server returned vectors of different sizes {sorted(sizes)}")
        matrix = np.asarray([d.embedding for d in data], dtype=np.float32)
        size = int(matrix.shape[1])
        if size == 0:
            raise PermanentError(f"{what}: the server returned empty vectors")
        if not np.isfinite(matrix).all():
            raise PermanentError(f"{what}: the server returned vectors with NaN or infinite values")
        if self._dim is not None and size != self._dim:
            # Mixing sizes would corrupt the vector cache, which is keyed by model_id alone.
            raise PermanentError(f"{what}: {self.model} returned {size}-dimensional vectors, expected {self._dim}"
                                 + ("" if self.dimensions else "; set REPOBUILD_OPENAI_DIMENSIONS"))
        self._dim = size
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        out: Vectors = (matrix / np.clip(norms, 1e-12, None)).astype(np.float32)
        return out


def _summary(indices: list[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:8])
    return shown + (", ..." if len(indices) > 8 else "") if indices else "none"
