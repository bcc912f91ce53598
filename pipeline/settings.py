"""Settings: the only place that reads the environment.

One pydantic-settings model. Each field names its environment variables: the first is the one `to_env()` writes,
the others are the original service's names (`R2_*`, `TEMP_DIR`, `PORT`, `SKIP_EMBEDDINGS`…), read in order when
the ones before them are unset or empty. `from_env()` and `to_env()` are both derived from these declarations, so a
field added here is read, validated and handed to worker processes with nothing else to edit.

The text formats are the service's own, not pydantic's: an empty variable counts as unset; a flag is true for
1/true/yes/on (any case) and false for any other text; whole numbers accept "2.0" and "1e3"; a list is comma
separated (pydantic-settings would expect JSON).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

_TRUE = frozenset({"1", "true", "yes", "on"})


def _flag(value: object) -> object:
    # Lenient on purpose, as the original was: "maybe" means false, not a failed start.
    return value.strip().lower() in _TRUE if isinstance(value, str) else value


def _not_a_number(raw: str) -> PydanticCustomError:
    return PydanticCustomError("number", "must be a number, got {raw}", {"raw": repr(raw)})


def _number(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return float(value)
    except ValueError:
        raise _not_a_number(value) from None


def _whole(value: object) -> object:
    # A whole number is read as a number and truncated, so "2.0" and "1e3" keep working.
    if not isinstance(value, str):
        return value
    try:
        return int(float(value))
    except (ValueError, OverflowError):  # not a number, or nan / inf
        raise _not_a_number(value) from None


def _comma_list(value: object) -> object:
    if not isinstance(value, str):
        return value
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _at_least(floor: int) -> AfterValidator:
    return AfterValidator(lambda v: max(floor, v))


Flag = Annotated[bool, BeforeValidator(_flag)]
Number = Annotated[float, BeforeValidator(_number)]
Whole = Annotated[int, BeforeValidator(_whole)]
# NoDecode: the variable is a comma-separated list, not JSON.
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]
LogFormat = Annotated[Literal["text", "json"], BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str)
                                                                else v)]
NoTrailingSlash = Annotated[str, AfterValidator(lambda v: v.rstrip("/"))]


def _env(*names: str, default: Any = None, factory: Callable[..., Any] | None = None) -> Any:
    """A field read from these variables, first non-empty wins; `to_env()` writes the first name."""
    if factory is not None:
        return Field(default_factory=factory, validation_alias=AliasChoices(*names))
    return Field(default, validation_alias=AliasChoices(*names))


def _names(field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    assert isinstance(alias, AliasChoices), "every Settings field declares its variables with _env()"
    return [name for name in alias.choices if isinstance(name, str)]


# Defaults computed from fields declared above them (pydantic passes the validated values so far).
def _artifacts_default(data: dict[str, Any]) -> str:
    return str(Path(data.get("temp_dir") or tempfile.gettempdir()) / "repobuild" / "artifacts")


def _r2_endpoint(data: dict[str, Any]) -> str | None:
    account = data.get("r2_account_id")
    return f"https://{account}.r2.cloudflarestorage.com" if account else None


def _region_default(data: dict[str, Any]) -> str | None:
    # R2 accepts only the region "auto"; any other endpoint keeps boto3's own region lookup.
    endpoint = data.get("s3_endpoint_url")
    return "auto" if endpoint and ".r2.cloudflarestorage.com" in endpoint else None


def _target(data: dict[str, Any]) -> tuple[str, str]:
    bucket, _, prefix = (data.get("publish_target") or "").removeprefix("s3://").partition("/")
    return bucket, prefix


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (a test's dict, a worker's future environment)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ  # read by super().__init__ through _load_env_vars
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class Settings(BaseSettings):
    """Everything configurable. Build it with `Settings.from_env()`; tests build it directly and use `with_()`."""

    model_config = SettingsConfigDict(
        frozen=True,
        case_sensitive=True,
        env_ignore_empty=True,
        # Python code (tests) builds Settings by field name; the environment only by the declared names.
        validate_by_name=True,
        validate_by_alias=True,
    )

    redis_url: str | None = _env("REPOBUILD_REDIS_URL")
    # the master's name when REPOBUILD_REDIS_URL is a Sentinel URL (sentinel://h1:26379;sentinel://h2:26379/0)
    redis_sentinel_master: str = _env("REPOBUILD_REDIS_SENTINEL_MASTER", default="mymaster")
    temp_dir: str = _env("REPOBUILD_TEMP_DIR", "TEMP_DIR", factory=tempfile.gettempdir)
    artifacts: str = _env("REPOBUILD_ARTIFACTS", factory=_artifacts_default)
    output: str = _env("REPOBUILD_OUTPUT", factory=lambda: str(Path.cwd() / "repobuild-output"))
    task_budget_s: Number = _env("REPOBUILD_TASK_BUDGET_S", default=60.0)
    api_keys: CommaList = _env("REPOBUILD_API_KEYS", default=())
    callback_secret: str | None = _env("REPOBUILD_CALLBACK_SECRET")
    port: Whole = _env("REPOBUILD_PORT", "PORT", default=8080)
    github_token: str | None = _env("GITHUB_TOKEN")
    openai_api_key: str | None = _env("OPENAI_API_KEY")
    skip_embeddings: Flag = _env("REPOBUILD_SKIP_EMBEDDINGS", "SKIP_EMBEDDINGS", default=False)
    keep_tmp_files: Flag = _env("KEEP_TMP_FILES", default=False)
    key_prefix: str = _env("REPOBUILD_KEY_PREFIX", default="repobuild:")
    state_ttl_s: Whole = _env("REPOBUILD_STATE_TTL_S", default=7 * 24 * 3600)
    lease_ttl_s: Number = _env("REPOBUILD_LEASE_TTL_S", default=15.0)
    parse_batch: Whole = _env("REPOBUILD_PARSE_BATCH", default=50)
    # false: a stage runs its own batches, one after another in its task with a checkpoint after each, instead of
    # sending them to every pool process (a one-process worker gains nothing from the broker's round trips)
    fan_out: Flag = _env("REPOBUILD_FAN_OUT", default=True)
    max_retries: Whole = _env("REPOBUILD_MAX_RETRIES", default=5)
    retry_backoff_max_s: Whole = _env("REPOBUILD_RETRY_BACKOFF_MAX_S", default=60)
    callback_timeout_s: Number = _env("REPOBUILD_CALLBACK_TIMEOUT_S", default=10.0)
    reconcile_interval_s: Number = _env("REPOBUILD_RECONCILE_INTERVAL_S", default=5.0)
    # A worker says every ttl / 4 which broker messages it holds (worker/message_holds.py); once its word is this
    # old it is dead, and what it held is re-driven at once instead of after the visibility timeout.
    worker_alive_ttl_s: Annotated[Number, AfterValidator(lambda v: max(v, 0.5))] = _env(
        "REPOBUILD_WORKER_ALIVE_TTL_S", default=4.0)
    events_max: Whole = _env("REPOBUILD_EVENTS_MAX", default=1000)
    # an events stream ends after this long (EventSource reconnects with Last-Event-ID): no request waits forever
    events_stream_max_s: Number = _env("REPOBUILD_EVENTS_STREAM_MAX_S", default=300.0)
    media_prefix: str = _env("REPOBUILD_MEDIA_PREFIX", default="/_repo/medias")
    note_prefix: str = _env("REPOBUILD_NOTE_PREFIX", default="/_repo/notes")
    # embeddings: onnx (local MiniLM or REPOBUILD_TEXT_MODEL_DIR) | openai
    embed_provider: Annotated[str, AfterValidator(str.lower)] = _env("REPOBUILD_EMBED_PROVIDER", default="onnx")
    text_model_dir: str | None = _env("REPOBUILD_TEXT_MODEL_DIR")
    embed_batch: Whole = _env("REPOBUILD_EMBED_BATCH", default=32)
    # 0: cores / 2, so two pool processes share the machine without oversubscribing
    embed_threads: Whole = _env("REPOBUILD_EMBED_THREADS", default=0)
    openai_base_url: str | None = _env("REPOBUILD_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    openai_embed_model: str = _env("REPOBUILD_OPENAI_EMBED_MODEL", default="text-embedding-3-small")
    # 0 or unset: the model's own size
    openai_dimensions: Annotated[int | None, BeforeValidator(_whole), AfterValidator(lambda v: v or None)] = _env(
        "REPOBUILD_OPENAI_DIMENSIONS")
    # Each embeddings request to the OpenAI-compatible server: how long one may take, and how many attempts
    # (429/5xx/timeouts/dropped connections) before the batch gives up and its task's own retries take over.
    openai_timeout_s: Number = _env("REPOBUILD_OPENAI_TIMEOUT_S", default=120.0)
    openai_max_attempts: Annotated[Whole, _at_least(1)] = _env("REPOBUILD_OPENAI_MAX_ATTEMPTS", default=6)
    clip_model_dir: str | None = _env("REPOBUILD_CLIP_MODEL_DIR")
    # the chat model that writes a project from a brief (generate-project-from-brief), on openai_base_url
    openai_chat_model: str = _env("REPOBUILD_OPENAI_CHAT_MODEL", default="gpt-4o-mini")
    # GitHub's REST API, for new-repo-from-template (a GitHub Enterprise server: https://host/api/v3)
    github_api_url: NoTrailingSlash = _env("REPOBUILD_GITHUB_API_URL", default="https://api.github.com")
    # Requests made for a caller reach public addresses only, plus these host names and CIDRs (pipeline/http/).
    allow_hosts: CommaList = _env("REPOBUILD_ALLOW_HOSTS", default=())
    # Deprecated, kept for deployments that set it: imageUrl and WordPress attachments may reach any address.
    allow_private_image_urls: Flag = _env("REPOBUILD_ALLOW_PRIVATE_IMAGE_URLS", default=False)
    # Connect and read timeout of each git request (clone, push), so a silent server cannot hold a stage.
    git_timeout_s: Number = _env("REPOBUILD_GIT_TIMEOUT_S", default=60.0)
    image_fetch_max_bytes: Whole = _env("REPOBUILD_IMAGE_FETCH_MAX_BYTES", default=20 * 1024 * 1024)
    # WordPress attachments: connect/read timeout of each download, and the wall time all of one import's downloads
    # may take (across task continuations); what is left when it is spent keeps its original URL, as an issue.
    wp_media_timeout_s: Number = _env("REPOBUILD_WP_MEDIA_TIMEOUT_S", default=15.0)
    wp_media_budget_s: Number = _env("REPOBUILD_WP_MEDIA_BUDGET_S", default=600.0)
    # Folders under which a request may name paths on this machine (a local `source`, file:// URLs, distFolder,
    # xmlFilePath), symlinks resolved; empty: none. `repobuild run` adds the folder it is given, for its own worker.
    local_source_roots: CommaList = _env("REPOBUILD_LOCAL_SOURCE_ROOTS", default=())
    # S3-compatible publishing (R2 by default) and S3 artifact stores (REPOBUILD_ARTIFACTS=s3://bucket/prefix).
    # None for the endpoint means AWS itself; None for the keys means boto3's own credential chain.
    # The original's R2 account: the endpoint defaults to that account's R2.
    r2_account_id: str | None = _env("R2_ACCOUNT_ID")
    s3_endpoint_url: str | None = _env("REPOBUILD_S3_ENDPOINT_URL", factory=_r2_endpoint)
    s3_region: str | None = _env("REPOBUILD_S3_REGION", factory=_region_default)
    s3_access_key_id: str | None = _env("REPOBUILD_S3_ACCESS_KEY_ID", "R2_ACCESS_KEY_ID")
    s3_secret_access_key: str | None = _env("REPOBUILD_S3_SECRET_ACCESS_KEY", "R2_SECRET_ACCESS_KEY")
    # `s3://bucket/prefix`: the bucket and the folder below, unless REPOBUILD_S3_BUCKET / _PREFIX say otherwise.
    publish_target: str | None = _env("REPOBUILD_PUBLISH_TARGET")
    s3_bucket: str | None = _env("REPOBUILD_S3_BUCKET", "R2_BUCKET_NAME", factory=lambda d: _target(d)[0] or None)
    # Keys go under this folder of the bucket; "" = the root.
    s3_prefix: Annotated[str, AfterValidator(lambda v: v.strip("/"))] = _env(
        "REPOBUILD_S3_PREFIX", factory=lambda d: _target(d)[1])
    public_base_url: NoTrailingSlash = _env("REPOBUILD_PUBLIC_BASE_URL", default="https://static.repo.md")
    s3_max_concurrency: Annotated[Whole, _at_least(1)] = _env("REPOBUILD_S3_MAX_CONCURRENCY", default=8)
    # Files above this go up in parts of this size (S3's minimum part is 5 MiB).
    s3_multipart_threshold_mb: Annotated[Whole, _at_least(5)] = _env("REPOBUILD_S3_MULTIPART_THRESHOLD_MB",
                                                                       default=16)
    # Files per upload step: the cursor is saved after each, so a killed worker re-sends at most these.
    upload_batch: Annotated[Whole, _at_least(1)] = _env("REPOBUILD_UPLOAD_BATCH", default=200)
    # Where an S3 artifact store materialises `tree()` prefixes; None: <temp_dir>/repobuild/artifact-cache.
    artifacts_cache: str | None = _env("REPOBUILD_ARTIFACTS_CACHE")
    # The worker's liveness heartbeat (worker/heartbeat.py): a file its consumer rewrites every interval while it
    # really consumes; `repobuild probe worker` fails once it is older than --max-age. One worker per container.
    heartbeat_file: str = _env("REPOBUILD_HEARTBEAT_FILE", factory=lambda d: str(
        Path(d.get("temp_dir") or tempfile.gettempdir()) / "repobuild-worker.heartbeat"))
    heartbeat_interval_s: Annotated[Number, AfterValidator(lambda v: max(v, 0.1))] = _env(
        "REPOBUILD_HEARTBEAT_INTERVAL_S", default=5.0)
    # Messages left waiting this long in the worker's queues while it had a free process and received none:
    # its consumer is stuck (celery#8030), and the heartbeat stops.
    heartbeat_stall_s: Number = _env("REPOBUILD_HEARTBEAT_STALL_S", default=60.0)
    # Prometheus: a worker's main process serves its metrics on this port (0: none); the API answers /metrics.
    metrics_port: Whole = _env("REPOBUILD_METRICS_PORT", default=9808)
    metrics_host: str = _env("REPOBUILD_METRICS_HOST", default="0.0.0.0")
    # prometheus-client's own variable (it reads it at import): the empty folder where prefork pool processes and
    # gunicorn workers keep their metrics. Declared here so worker processes are handed it and the exporters know.
    prometheus_multiproc_dir: str | None = _env("PROMETHEUS_MULTIPROC_DIR")
    # text: human-readable lines; json: one JSON object a line with job_id, stage, attempt, task_id on each.
    log_format: LogFormat = _env("REPOBUILD_LOG_FORMAT", default="text")
    # Fault injection for the chaos tests (pipeline/faults.py), off when empty: a glob of input paths whose
    # process kills itself with SIGKILL when a stage reaches them. Never set it in production.
    fault_kill_item: str = _env("REPOBUILD_FAULT_KILL_ITEM", default="")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `Settings(...)` is exactly what the caller wrote; only `from_env()` reads an environment.
        return (init_settings,)

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
        """The settings `env` (default: this process's environment) names; a field it leaves unset keeps its default.

        `model_fields_set` of the result holds the fields the environment set."""
        environ = os.environ if env is None else env
        # The source also looks a field up by its Python name; only the declared names count.
        values = {k: v for k, v in _EnvironSource(cls, environ)().items() if k not in cls.model_fields}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            # A field that failed also stops the defaults computed from it; those follow-on errors say nothing.
            errors = [e for e in exc.errors() if e["type"] != "default_factory_not_called"]
            raise ValueError("; ".join(f"{cls._variable(str(e['loc'][0]), environ)} {e['msg']}"
                                       for e in errors)) from exc

    @classmethod
    def _variable(cls, key: str, environ: Mapping[str, str]) -> str:
        # The source files a value under a field's first name; an error names the variable that was read.
        for field in cls.model_fields.values():
            names = _names(field)
            if key in names:
                return next((n for n in names if environ.get(n)), key)
        return key

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env()` in another process (a worker) give these settings."""
        env = {}
        for name, field in type(self).model_fields.items():
            text = _env_text(getattr(self, name))
            if text:  # unset and empty are the same to from_env()
                env[_names(field)[0]] = text
        return env

    def with_(self, **changes: object) -> Settings:
        """A copy with these fields changed (not validated, like `dataclasses.replace`)."""
        return self.model_copy(update=changes)


def _env_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)
