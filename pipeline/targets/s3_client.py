"""The S3 client for the configured endpoint, its errors mapped onto the pipeline's, and reading.

Errors are mapped onto the pipeline's hierarchy in one place (`as_pipeline_error`): throttling, 5xx,
timeouts and dropped connections are TransientError; refused credentials, a missing bucket and other
4xx are PermanentError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from pipeline.errors import PermanentError, PipelineError, TransientError
from pipeline.settings import Settings

# boto3 ships no type information and the project does not depend on boto3-stubs.
S3Client = Any
# botocore retries each request this many times in all (standard mode: 5xx, throttling, timeouts);
# a caller's own loop (per file, per pointer write) sits above it.
REQUEST_MAX_ATTEMPTS = 3

_TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "TooManyRequests", "RequestLimitExceeded",
    "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable", "BadDigest",
    "OperationAborted", "IncompleteBody",
})
_AUTH_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
    "AuthorizationHeaderMalformed", "InvalidSecurity", "AllAccessDisabled",
})
_MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
_TRANSIENT_EXCEPTIONS = (BotoConnectionError, ConnectionClosedError, IncompleteReadError, ResponseStreamingError)


# --- client and URLs ---------------------------------------------------------------------------------

def is_aws_endpoint(endpoint_url: str | None) -> bool:
    if not endpoint_url:
        return True
    host = urlsplit(endpoint_url).hostname or ""
    return host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


def s3_client(settings: Settings, *, max_pool_connections: int | None = None,
              max_attempts: int = REQUEST_MAX_ATTEMPTS) -> S3Client:
    """A boto3 S3 client for the configured endpoint (R2, AWS, or any S3-compatible server).

    Create it after fork: boto3 clients are thread-safe but must not cross a process boundary.
    """
    aws = is_aws_endpoint(settings.s3_endpoint_url)
    # Uploads run s3_max_concurrency files at once, big ones with a few part threads each.
    pool = max_pool_connections or max(10, settings.s3_max_concurrency * 4)
    config = Config(
        signature_version="s3v4",
        region_name=settings.s3_region,
        # Virtual-host addressing needs wildcard DNS per bucket, which self-hosted servers rarely have.
        s3={"addressing_style": "auto" if aws else "path"},
        retries={"mode": "standard", "max_attempts": max(1, max_attempts)},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=pool,
        # boto3 >= 1.36 sends CRC checksums in headers/trailers that several S3-compatible servers refuse;
        # we send Content-MD5 ourselves, which every implementation checks.
        request_checksum_calculation="when_supported" if aws else "when_required",
        response_checksum_validation="when_supported" if aws else "when_required",
    )
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        config=config,
    )


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix/` → ("bucket", "some/prefix"); the prefix may be empty."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise PermanentError(f"not an s3://bucket/prefix URL: {url!r}")
    if parts.query or parts.fragment:
        raise PermanentError(f"an s3:// URL takes no query or fragment: {url!r}")
    prefix = parts.path.strip("/")
    if prefix and any(p in ("", ".", "..") for p in prefix.split("/")):
        raise PermanentError(f"invalid prefix in {url!r}")
    return parts.netloc, prefix


def ensure_bucket(client: S3Client, bucket: str) -> bool:
    """Create `bucket` unless it is there already; True when it was created (a deployment's one-shot step)."""
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except (ClientError, BotoCoreError) as exc:
        if not is_missing(exc) and http_status(exc) != 404:
            raise as_pipeline_error(exc, f"check bucket {bucket}") from exc
    try:
        client.create_bucket(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        if error_code(exc) in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return False  # made by another run of this step meanwhile
        raise as_pipeline_error(exc, f"create bucket {bucket}") from exc
    return True


# --- errors ------------------------------------------------------------------------------------------

def _client_error(exc: BaseException) -> ClientError | None:
    # boto3's upload_file re-raises a part's ClientError as S3UploadFailedError, chained implicitly.
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ClientError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def error_code(exc: BaseException) -> str:
    err = _client_error(exc)
    return str(err.response.get("Error", {}).get("Code", "")) if err is not None else ""


def http_status(exc: BaseException) -> int | None:
    err = _client_error(exc)
    if err is None:
        return None
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def is_missing(exc: BaseException) -> bool:
    return error_code(exc) in _MISSING_CODES or http_status(exc) == 404


def is_precondition_failed(exc: BaseException) -> bool:
    return error_code(exc) in _PRECONDITION_CODES or http_status(exc) in (409, 412)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, PipelineError):
        return False
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, _TRANSIENT_EXCEPTIONS):
            return True
        seen = seen.__cause__ or seen.__context__
    err = _client_error(exc)
    if err is None:
        return False
    status = http_status(err) or 0
    return status >= 500 or status in (408, 429) or error_code(err) in _TRANSIENT_CODES


def as_pipeline_error(exc: BaseException, action: str) -> PipelineError:
    """The pipeline error to raise for a failed S3 call (`action` says what was being done)."""
    if isinstance(exc, PipelineError):
        return exc
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return PermanentError(f"S3 {action}: no usable credentials (set REPOBUILD_S3_ACCESS_KEY_ID and "
                              "REPOBUILD_S3_SECRET_ACCESS_KEY, or R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY)")
    code = error_code(exc)
    err = _client_error(exc)
    detail = f"{code}: {err.response.get('Error', {}).get('Message', '')}" if err is not None else str(exc)
    if code in _AUTH_CODES:
        return PermanentError(f"S3 {action}: credentials refused ({detail}); check the S3/R2 access key "
                              "and secret, and that they may use this bucket")
    if code == "NoSuchBucket":
        return PermanentError(f"S3 {action}: the bucket does not exist ({detail})")
    if is_transient(exc):
        return TransientError(f"S3 {action}: {detail}")
    return PermanentError(f"S3 {action}: {detail}")


# --- listing -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RemoteObject:
    etag: str  # without the quotes S3 puts around it
    size: int

    @property
    def md5(self) -> str | None:
        """The content MD5 when the ETag is one (a single-part upload), else None."""
        e = self.etag.lower()
        return e if len(e) == 32 and all(c in "0123456789abcdef" for c in e) else None


def list_objects(client: S3Client, bucket: str, prefix: str) -> dict[str, RemoteObject]:
    """Every object under `prefix`, following continuation tokens past the 1000-key page."""
    out: dict[str, RemoteObject] = {}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", ()):
                out[obj["Key"]] = RemoteObject(str(obj.get("ETag", "")).strip('"'), int(obj.get("Size", 0)))
    except (ClientError, BotoCoreError) as exc:
        raise as_pipeline_error(exc, f"listing s3://{bucket}/{prefix}") from exc
    return out


def head_object(client: S3Client, bucket: str, key: str) -> dict[str, Any] | None:
    """HEAD of `key`, or None when it does not exist."""
    try:
        return dict(client.head_object(Bucket=bucket, Key=key))
    except (ClientError, BotoCoreError) as exc:
        if is_missing(exc):
            return None
        raise as_pipeline_error(exc, f"reading the metadata of s3://{bucket}/{key}") from exc


# --- small JSON objects (the `latest.json` pointer is in s3_pointer.py) -----------------------------------

def read_bytes(client: S3Client, bucket: str, key: str) -> tuple[bytes | None, str | None]:
    try:
        resp = client.get_object(Bucket=bucket, Key=key)
        body: bytes = resp["Body"].read()
    except (ClientError, BotoCoreError) as exc:
        if is_missing(exc):
            return None, None
        raise as_pipeline_error(exc, f"reading s3://{bucket}/{key}") from exc
    return body, str(resp.get("ETag") or "") or None


def read_json(client: S3Client, bucket: str, key: str) -> tuple[Any, str | None]:
    """(parsed JSON, ETag) of `key`, or (None, None) when it does not exist."""
    body, etag = read_bytes(client, bucket, key)
    if body is None:
        return None, None
    try:
        return json.loads(body), etag
    except ValueError as exc:
        raise PermanentError(f"s3://{bucket}/{key} is not JSON: {exc}") from exc
