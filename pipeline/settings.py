"""Settings: the only place that reads the environment."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    return int(_float(env, name, default))


@dataclass(frozen=True)
class Settings:
    """Everything configurable. Build it with `Settings.from_env()`; tests use `replace()`."""

    redis_url: str | None = None
    artifacts: str = field(default_factory=lambda: str(Path(tempfile.gettempdir()) / "repobuild" / "artifacts"))
    output: str = field(default_factory=lambda: str(Path.cwd() / "repobuild-output"))
    temp_dir: str = field(default_factory=tempfile.gettempdir)
    task_budget_s: float = 60.0
    api_keys: tuple[str, ...] = ()
    callback_secret: str | None = None
    port: int = 8080
    github_token: str | None = None
    openai_api_key: str | None = None
    skip_embeddings: bool = False
    keep_tmp_files: bool = False
    key_prefix: str = "repobuild:"
    state_ttl_s: int = 7 * 24 * 3600
    lease_ttl_s: float = 15.0
    parse_batch: int = 50
    max_retries: int = 5
    retry_backoff_max_s: int = 60
    callback_timeout_s: float = 10.0
    reconcile_interval_s: float = 5.0
    events_max: int = 1000
    media_prefix: str = "/_repo/medias"
    note_prefix: str = "/_repo/notes"
    # embeddings
    embed_provider: str = "onnx"  # onnx (local MiniLM or REPOBUILD_TEXT_MODEL_DIR) | openai
    text_model_dir: str | None = None
    embed_batch: int = 32
    embed_threads: int = 0  # 0: cores / 2, so two pool processes share the machine without oversubscribing
    openai_base_url: str | None = None
    openai_embed_model: str = "text-embedding-3-small"
    openai_dimensions: int | None = None
    clip_model_dir: str | None = None
    # imageUrl fetches of the inference API refuse private and loopback addresses (SSRF) unless allowed
    allow_private_image_urls: bool = False
    image_fetch_max_bytes: int = 20 * 1024 * 1024

    @property
    def soft_time_limit_s(self) -> float:
        # A stage yields at its budget; the soft limit is the safety net for a batch that overruns.
        return max(self.task_budget_s * 3, 60.0)

    @property
    def hard_time_limit_s(self) -> float:
        return self.soft_time_limit_s + 30

    @property
    def visibility_timeout_s(self) -> int:
        # Above the hard limit (and above the longest retry countdown), so a live worker's
        # message is never handed to a second worker while it still runs.
        return int(max(self.hard_time_limit_s, self.retry_backoff_max_s) + 60)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        base = cls()
        temp_dir = e.get("REPOBUILD_TEMP_DIR") or e.get("TEMP_DIR") or base.temp_dir
        keys = tuple(k.strip() for k in (e.get("REPOBUILD_API_KEYS") or "").split(",") if k.strip())
        return cls(
            redis_url=e.get("REPOBUILD_REDIS_URL") or None,
            artifacts=e.get("REPOBUILD_ARTIFACTS") or str(Path(temp_dir) / "repobuild" / "artifacts"),
            output=e.get("REPOBUILD_OUTPUT") or base.output,
            temp_dir=temp_dir,
            task_budget_s=_float(e, "REPOBUILD_TASK_BUDGET_S", base.task_budget_s),
            api_keys=keys,
            callback_secret=e.get("REPOBUILD_CALLBACK_SECRET") or None,
            port=_int(e, "REPOBUILD_PORT", _int(e, "PORT", base.port)),
            github_token=e.get("GITHUB_TOKEN") or None,
            openai_api_key=e.get("OPENAI_API_KEY") or None,
            skip_embeddings=_bool(e.get("REPOBUILD_SKIP_EMBEDDINGS") or e.get("SKIP_EMBEDDINGS")),
            keep_tmp_files=_bool(e.get("KEEP_TMP_FILES")),
            key_prefix=e.get("REPOBUILD_KEY_PREFIX") or base.key_prefix,
            state_ttl_s=_int(e, "REPOBUILD_STATE_TTL_S", base.state_ttl_s),
            lease_ttl_s=_float(e, "REPOBUILD_LEASE_TTL_S", base.lease_ttl_s),
            parse_batch=_int(e, "REPOBUILD_PARSE_BATCH", base.parse_batch),
            max_retries=_int(e, "REPOBUILD_MAX_RETRIES", base.max_retries),
            retry_backoff_max_s=_int(e, "REPOBUILD_RETRY_BACKOFF_MAX_S", base.retry_backoff_max_s),
            callback_timeout_s=_float(e, "REPOBUILD_CALLBACK_TIMEOUT_S", base.callback_timeout_s),
            reconcile_interval_s=_float(e, "REPOBUILD_RECONCILE_INTERVAL_S", base.reconcile_interval_s),
            embed_provider=(e.get("REPOBUILD_EMBED_PROVIDER") or base.embed_provider).lower(),
            text_model_dir=e.get("REPOBUILD_TEXT_MODEL_DIR") or None,
            embed_batch=_int(e, "REPOBUILD_EMBED_BATCH", base.embed_batch),
            embed_threads=_int(e, "REPOBUILD_EMBED_THREADS", base.embed_threads),
            openai_base_url=e.get("REPOBUILD_OPENAI_BASE_URL") or e.get("OPENAI_BASE_URL") or None,
            openai_embed_model=e.get("REPOBUILD_OPENAI_EMBED_MODEL") or base.openai_embed_model,
            openai_dimensions=_int(e, "REPOBUILD_OPENAI_DIMENSIONS", 0) or None,
            clip_model_dir=e.get("REPOBUILD_CLIP_MODEL_DIR") or None,
            allow_private_image_urls=_bool(e.get("REPOBUILD_ALLOW_PRIVATE_IMAGE_URLS")),
        )

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env()` in another process (a worker) give these settings."""
        env = {
            "REPOBUILD_ARTIFACTS": self.artifacts,
            "REPOBUILD_OUTPUT": self.output,
            "REPOBUILD_TEMP_DIR": self.temp_dir,
            "REPOBUILD_TASK_BUDGET_S": repr(self.task_budget_s),
            "REPOBUILD_KEY_PREFIX": self.key_prefix,
            "REPOBUILD_STATE_TTL_S": str(self.state_ttl_s),
            "REPOBUILD_LEASE_TTL_S": repr(self.lease_ttl_s),
            "REPOBUILD_PARSE_BATCH": str(self.parse_batch),
            "REPOBUILD_MAX_RETRIES": str(self.max_retries),
            "REPOBUILD_RETRY_BACKOFF_MAX_S": str(self.retry_backoff_max_s),
            "REPOBUILD_CALLBACK_TIMEOUT_S": repr(self.callback_timeout_s),
            "REPOBUILD_RECONCILE_INTERVAL_S": repr(self.reconcile_interval_s),
            "REPOBUILD_SKIP_EMBEDDINGS": "1" if self.skip_embeddings else "0",
            "REPOBUILD_EMBED_PROVIDER": self.embed_provider,
            "REPOBUILD_EMBED_BATCH": str(self.embed_batch),
            "REPOBUILD_EMBED_THREADS": str(self.embed_threads),
            "REPOBUILD_OPENAI_EMBED_MODEL": self.openai_embed_model,
        }
        for name, value in (("REPOBUILD_TEXT_MODEL_DIR", self.text_model_dir),
                            ("REPOBUILD_OPENAI_BASE_URL", self.openai_base_url),
                            ("REPOBUILD_OPENAI_DIMENSIONS", self.openai_dimensions),
                            ("REPOBUILD_CLIP_MODEL_DIR", self.clip_model_dir),
                            ("OPENAI_API_KEY", self.openai_api_key)):
            if value:
                env[name] = str(value)
        if self.redis_url:
            env["REPOBUILD_REDIS_URL"] = self.redis_url
        if self.callback_secret:
            env["REPOBUILD_CALLBACK_SECRET"] = self.callback_secret
        if self.api_keys:
            env["REPOBUILD_API_KEYS"] = ",".join(self.api_keys)
        return env

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]
