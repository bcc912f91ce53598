"""Which text embedder a job uses, from the settings, and whether it embeds at all."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.embedders.text import OnnxTextEmbedder, TextEmbedder, load_text_embedder
from pipeline.errors import PermanentError
from pipeline.settings import Settings


def embeddings_skipped(settings: Settings, options: Mapping[str, Any]) -> bool:
    """No vectors for this job: turned off for the service (SKIP_EMBEDDINGS) or by the job's `skipEmbeddings`."""
    return bool(settings.skip_embeddings or options.get("skipEmbeddings"))


def _threads(settings: Settings) -> int:
    return settings.embed_threads or max(1, (os.cpu_count() or 2) // 2)


# One OpenAI-compatible embedder per process and configuration, as load_text_embedder keeps one ONNX session:
# every batch asks for one, and building the SDK client (an httpx client, its TLS context) costs ~50 ms of CPU,
# and a fresh client cannot reuse the connection the previous batch opened. The pid is in the key so that a
# forked pool process never shares its parent's connections. The SDK client is thread-safe.
_remote: dict[tuple[Any, ...], TextEmbedder] = {}
_remote_lock = threading.Lock()


def _openai_embedder(settings: Settings) -> TextEmbedder:
    from pipeline.embedders.openai_compat import OpenAIEmbedder  # noqa: PLC0415

    if not settings.openai_base_url and not settings.openai_api_key:
        raise PermanentError("REPOBUILD_EMBED_PROVIDER=openai needs OPENAI_API_KEY or REPOBUILD_OPENAI_BASE_URL")
    key = (os.getpid(), settings.openai_base_url, settings.openai_embed_model, settings.openai_api_key,
           settings.openai_dimensions, settings.openai_max_attempts, settings.openai_timeout_s)
    with _remote_lock:
        embedder = _remote.get(key)
        if embedder is None:
            embedder = _remote[key] = OpenAIEmbedder(
                base_url=settings.openai_base_url, model=settings.openai_embed_model,
                api_key=settings.openai_api_key or "unused", dimensions=settings.openai_dimensions,
                max_attempts=settings.openai_max_attempts, timeout_s=settings.openai_timeout_s)
    return embedder


def text_embedder(settings: Settings) -> TextEmbedder:
    if settings.embed_provider == "openai":
        return _openai_embedder(settings)
    if settings.embed_provider != "onnx":
        raise PermanentError(f"unknown REPOBUILD_EMBED_PROVIDER {settings.embed_provider!r} (onnx or openai)")
    return load_text_embedder(settings.text_model_dir, threads=_threads(settings))


def counting_model(settings: Settings) -> OnnxTextEmbedder:
    """The local model whose tokenizer counts for chunking, whatever provider embeds the chunks."""
    return load_text_embedder(settings.text_model_dir if settings.embed_provider == "onnx" else None,
                              threads=_threads(settings))


def token_counter(settings: Settings) -> Callable[[str], int]:
    """Token counts for chunking: the local model's tokenizer, whatever provider embeds the chunks."""
    local = counting_model(settings)
    return lambda text: len(local.tokens(text))

