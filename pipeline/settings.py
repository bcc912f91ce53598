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
    # the chat model that writes a project from a brief (generate-project-from-brief), on openai_base_url
    openai_chat_model: str = "gpt-4o-mini"
    # GitHub's REST API, for new-repo-from-template (a GitHub Enterprise server: https://host/api/v3)
    github_api_url: str = "https://api.github.com"
    # imageUrl fetches of the inference API refuse private and loopback addresses (SSRF) unless allowed
    allow_private_image_urls: bool = False
    image_fetch_max_bytes: int = 20 * 1024 * 1024
    # S3-compatible publishing (R2 by default) and S3 artifact stores (REPOBUILD_ARTIFACTS=s3://bucket/prefix).
    # None for the endpoint means AWS itself; None for the keys means boto3's own credential chain.
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_bucket: str | None = None
    # Keys go under this folder of the bucket (`REPOBUILD_PUBLISH_TARGET=s3://bucket/prefix`); "" = the root.
    s3_prefix: str = ""
    public_base_url: str = "https://static.repo.md"
    s3_max_concurrency: int = 8
    # Files above this go up in parts of this size (S3's minimum part is 5 MiB).
    s3_multipart_threshold_mb: int = 16
    # Files per upload step: the cursor is saved after each, so a killed worker re-sends at most these.
    upload_batch: int = 200
    # Where an S3 artifact store materialises `tree()` prefixes; None: <temp_dir>/repobuild/artifact-cache.
    artifacts_cache: str | None = None

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
        r2_account = e.get("R2_ACCOUNT_ID") or None
        target_bucket, _, target_prefix = (e.get("REPOBUILD_PUBLISH_TARGET") or "").removeprefix("s3://").partition("/")
        s3_endpoint = e.get("REPOBUILD_S3_ENDPOINT_URL") or (
            f"https://{r2_account}.r2.cloudflarestorage.com" if r2_account else None)
        # R2 accepts only the region "auto"; any other endpoint keeps boto3's own region lookup.
        r2 = s3_endpoint is not None and ".r2.cloudflarestorage.com" in s3_endpoint
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
            openai_chat_model=e.get("REPOBUILD_OPENAI_CHAT_MODEL") or base.openai_chat_model,
            github_api_url=(e.get("REPOBUILD_GITHUB_API_URL") or base.github_api_url).rstrip("/"),
            allow_private_image_urls=_bool(e.get("REPOBUILD_ALLOW_PRIVATE_IMAGE_URLS")),
            image_fetch_max_bytes=_int(e, "REPOBUILD_IMAGE_FETCH_MAX_BYTES", base.image_fetch_max_bytes),
            s3_endpoint_url=s3_endpoint,
            s3_region=e.get("REPOBUILD_S3_REGION") or ("auto" if r2 else None),
            s3_access_key_id=e.get("REPOBUILD_S3_ACCESS_KEY_ID") or e.get("R2_ACCESS_KEY_ID") or None,
            s3_secret_access_key=e.get("REPOBUILD_S3_SECRET_ACCESS_KEY") or e.get("R2_SECRET_ACCESS_KEY") or None,
            s3_bucket=e.get("REPOBUILD_S3_BUCKET") or e.get("R2_BUCKET_NAME") or target_bucket or None,
            s3_prefix=(e.get("REPOBUILD_S3_PREFIX") or target_prefix).strip("/"),
            public_base_url=(e.get("REPOBUILD_PUBLIC_BASE_URL") or base.public_base_url).rstrip("/"),
            s3_max_concurrency=max(1, _int(e, "REPOBUILD_S3_MAX_CONCURRENCY", base.s3_max_concurrency)),
            s3_multipart_threshold_mb=max(
                5, _int(e, "REPOBUILD_S3_MULTIPART_THRESHOLD_MB", base.s3_multipart_threshold_mb)),
            upload_batch=max(1, _int(e, "REPOBUILD_UPLOAD_BATCH", base.upload_batch)),
            artifacts_cache=e.get("REPOBUILD_ARTIFACTS_CACHE") or None,
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
            "REPOBUILD_OPENAI_CHAT_MODEL": self.openai_chat_model,
            "REPOBUILD_GITHUB_API_URL": self.github_api_url,
            "REPOBUILD_PUBLIC_BASE_URL": self.public_base_url,
            "REPOBUILD_S3_MAX_CONCURRENCY": str(self.s3_max_concurrency),
            "REPOBUILD_S3_MULTIPART_THRESHOLD_MB": str(self.s3_multipart_threshold_mb),
            "REPOBUILD_UPLOAD_BATCH": str(self.upload_batch),
            "REPOBUILD_ALLOW_PRIVATE_IMAGE_URLS": "1" if self.allow_private_image_urls else "0",
            "REPOBUILD_IMAGE_FETCH_MAX_BYTES": str(self.image_fetch_max_bytes),
        }
        for name, value in (("REPOBUILD_TEXT_MODEL_DIR", self.text_model_dir),
                            ("REPOBUILD_OPENAI_BASE_URL", self.openai_base_url),
                            ("REPOBUILD_OPENAI_DIMENSIONS", self.openai_dimensions),
                            ("REPOBUILD_CLIP_MODEL_DIR", self.clip_model_dir),
                            ("OPENAI_API_KEY", self.openai_api_key),
                            ("REPOBUILD_S3_ENDPOINT_URL", self.s3_endpoint_url),
                            ("REPOBUILD_S3_REGION", self.s3_region),
                            ("REPOBUILD_S3_ACCESS_KEY_ID", self.s3_access_key_id),
                            ("REPOBUILD_S3_SECRET_ACCESS_KEY", self.s3_secret_access_key),
                            ("REPOBUILD_S3_BUCKET", self.s3_bucket),
                            ("REPOBUILD_S3_PREFIX", self.s3_prefix),
                            ("REPOBUILD_ARTIFACTS_CACHE", self.artifacts_cache)):
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
