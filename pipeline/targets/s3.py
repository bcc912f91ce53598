"""Publishing to S3-compatible object storage: Cloudflare R2 (the original's target), AWS S3, SeaweedFS.

Uploads are idempotent: an object whose stored content hash equals the local file's is skipped, so a
retried or repeated publish sends only what changed. Deciding that costs one paginated listing of the
prefixes being written (ListObjectsV2 gives every key's ETag and size, 1000 keys a page) and a HEAD only
for the objects the listing cannot settle:

- a single-part object's ETag is the MD5 of its bytes (AWS without SSE-KMS, R2, SeaweedFS), so comparing
  it with the local MD5 settles both "same" and "changed" without a request per object;
- a multipart object's ETag (`<md5 of part md5s>-<parts>`) depends on the part size, so for those (and
  for keys outside the listed prefixes) the `contenthash` metadata is read with HEAD.

A different size settles "changed" at once. Listing returns no user metadata, which is why the MD5 is
computed beside the SHA-256 in the same read of the file.

Errors are mapped onto the pipeline's hierarchy in one place (`as_pipeline_error`): throttling, 5xx,
timeouts and dropped connections are TransientError; refused credentials, a missing bucket and other
4xx are PermanentError.
"""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
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

from pipeline.backoff import full_jitter
from pipeline.errors import PermanentError, PipelineError, TransientError
from pipeline.settings import Settings

# boto3 ships no type information and the project does not depend on boto3-stubs.
S3Client = Any
ProgressCallback = Callable[[int, int], None]

MIB = 1024 * 1024
MIN_PART_BYTES = 5 * MIB  # S3's smallest allowed part (except the last)
# botocore retries each request this many times in all (standard mode: 5xx, throttling, timeouts);
# our per-file loop sits above it, so a file gets at most UPLOAD_ATTEMPTS * this many requests.
REQUEST_MAX_ATTEMPTS = 3
UPLOAD_ATTEMPTS = 3

CONTENT_TYPES = {
    ".json": "application/json",
    ".webp": "image/webp",
    ".sqlite": "application/octet-stream",
    ".md": "text/markdown; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".xml": "application/xml",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".avif": "image/avif",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".pdf": "application/pdf",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"

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


# --- files -------------------------------------------------------------------------------------------

def content_type(key: str) -> str:
    ext = os.path.splitext(key)[1].lower()
    if ext in CONTENT_TYPES:
        return CONTENT_TYPES[ext]
    guessed, _ = mimetypes.guess_type(key)
    return guessed or DEFAULT_CONTENT_TYPE


@dataclass(frozen=True)
class LocalFile:
    path: Path
    size: int
    sha256: str
    md5: str  # hex


def describe_file(path: str | os.PathLike[str]) -> LocalFile:
    """Size, SHA-256 and MD5 in one streamed read (videos and databases can be large)."""
    p = Path(path)
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(MIB), b""):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return LocalFile(p, size, sha.hexdigest(), md5.hexdigest())


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


def _common_prefix(keys: Iterable[str]) -> str:
    """The longest common folder ("a/b/") of the keys, so one listing covers them all."""
    it = iter(keys)
    first = next(it, None)
    if first is None:
        return ""
    common = first.rsplit("/", 1)[0] + "/" if "/" in first else ""
    for key in it:
        while common and not key.startswith(common):
            common = common[:-1].rsplit("/", 1)[0] + "/" if "/" in common[:-1] else ""
    return common


# --- uploads -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FailedUpload:
    key: str
    path: str
    error: str
    attempts: int
    transient: bool  # True: it gave up on retries; a later attempt may succeed


@dataclass
class UploadReport:
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[FailedUpload] = field(default_factory=list)
    # key → SHA-256 of what is stored there now (uploaded or skipped)
    hashes: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.uploaded) + len(self.skipped) + len(self.failed)

    def counts(self) -> dict[str, int]:
        """The numbers of the original's publishInfo."""
        return {"totalFiles": self.total, "successfulUploads": len(self.uploaded),
                "skippedUploads": len(self.skipped), "failedUploads": len(self.failed)}


class S3Publisher:
    """Uploads {key: local file} to one bucket: concurrent, multipart when big, skipping unchanged objects."""

    def __init__(self, client: S3Client, bucket: str, *, max_concurrency: int = 8,
                 multipart_threshold_mb: int = 16, attempts: int = UPLOAD_ATTEMPTS,
                 backoff_s: float = 0.5, backoff_max_s: float = 8.0) -> None:
        self.client = client
        self.bucket = bucket
        self.max_concurrency = max(1, max_concurrency)
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.multipart_threshold = max(MIN_PART_BYTES, multipart_threshold_mb * MIB)
        self.transfer = TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_threshold,
            # Files already go up s3_max_concurrency at a time; a few part threads each is enough.
            max_concurrency=4,
        )

    @classmethod
    def from_settings(cls, settings: Settings, bucket: str | None = None,
                      client: S3Client | None = None) -> S3Publisher:
        name = bucket or settings.s3_bucket
        if not name:
            raise PermanentError("no S3 bucket configured (set R2_BUCKET_NAME or REPOBUILD_S3_BUCKET)")
        return cls(client if client is not None else s3_client(settings), name,
                   max_concurrency=settings.s3_max_concurrency,
                   multipart_threshold_mb=settings.s3_multipart_threshold_mb)

    # reading

    def list_objects(self, prefix: str) -> dict[str, RemoteObject]:
        return list_objects(self.client, self.bucket, prefix)

    def list_hashes(self, prefix: str, *, read_metadata: bool = False) -> dict[str, str]:
        """{key: hash} under `prefix`: the ETag from the listing, or with `read_metadata` the stored
        `contenthash` (SHA-256; one HEAD per object, concurrent), falling back to the ETag where absent.

        Content-addressed keys (`_shared/medias/<sha256>-lg.webp`) need no metadata: the key is the hash.
        """
        listed = self.list_objects(prefix)
        hashes = {key: obj.etag for key, obj in listed.items()}
        if read_metadata and listed:
            with ThreadPoolExecutor(self.max_concurrency) as pool:
                futures = {pool.submit(head_object, self.client, self.bucket, key): key for key in listed}
                for fut in as_completed(futures):
                    head = fut.result()
                    stored = (head or {}).get("Metadata", {}).get("contenthash")
                    if stored:
                        hashes[futures[fut]] = str(stored)
        return hashes

    def get_json(self, key: str) -> Any:
        """The parsed JSON object at `key`, or None when there is none."""
        value, _ = read_json(self.client, self.bucket, key)
        return value

    # writing

    def upload(self, files: Mapping[str, str | os.PathLike[str]], *, project_id: str | None = None,
               org_id: str | None = None, job_id: str | None = None,
               list_prefixes: Sequence[str] | None = None,
               existing: Mapping[str, RemoteObject] | None = None,
               on_progress: ProgressCallback | None = None) -> UploadReport:
        """Upload every file; failures are returned in the report, not raised, once retries are spent.

        What is already stored is learnt from one paginated listing of `list_prefixes` (default: the
        keys' common folder), or from `existing` when the caller has listed already. A listing that
        fails raises: without it nothing can be decided, and refused credentials should stop the job.
        """
        for key in files:
            if not key or key.startswith("/"):
                raise PermanentError(f"invalid S3 key {key!r}")
        if existing is None:
            if list_prefixes is not None:
                prefixes = list(list_prefixes)
            else:
                # No common folder would mean listing the whole bucket; a HEAD per key is cheaper then.
                common = _common_prefix(files)
                prefixes = [common] if common else []
            listed: dict[str, RemoteObject] = {}
            for prefix in prefixes:
                listed.update(self.list_objects(prefix))
        else:
            prefixes = None
            listed = dict(existing)

        def covered(key: str) -> bool:
            return prefixes is None or any(key.startswith(p) for p in prefixes)

        meta = {name: value for name, value in
                (("projectid", project_id), ("orgid", org_id), ("jobid", job_id)) if value}
        report = UploadReport()
        total, done = len(files), 0
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            futures = {pool.submit(self._one, key, Path(path), listed.get(key), covered(key), meta): key
                       for key, path in files.items()}
            # Results are gathered (and progress reported) on the calling thread, so the callback
            # needs no locking of its own. It may raise (JobCancelled, LeaseLost): then the files not
            # yet started are dropped instead of being uploaded by a stage that no longer owns the job.
            try:
                for fut in as_completed(futures):
                    key = futures[fut]
                    outcome, detail = fut.result()
                    if isinstance(detail, FailedUpload):
                        report.failed.append(detail)
                    elif outcome == "uploaded":
                        report.uploaded.append(key)
                        report.hashes[key] = detail
                    else:
                        report.skipped.append(key)
                        report.hashes[key] = detail
                    done += 1
                    if on_progress is not None:
                        on_progress(done, total)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        report.uploaded.sort()
        report.skipped.sort()
        report.failed.sort(key=lambda f: f.key)
        return report

    def _one(self, key: str, path: Path, remote: RemoteObject | None, covered: bool,
             meta: Mapping[str, str]) -> tuple[str, str | FailedUpload]:
        """("uploaded"|"skipped", sha256) or ("failed", FailedUpload); never raises for one file."""
        try:
            local = describe_file(path)
        except OSError as exc:
            return "failed", FailedUpload(key, str(path), f"reading {path}: {exc}", 0, False)
        attempt = 0
        while True:
            attempt += 1
            try:
                if self._unchanged(key, local, remote, covered):
                    return "skipped", local.sha256
                self._put(key, local, meta)
                return "uploaded", local.sha256
            except (ClientError, BotoCoreError, S3UploadFailedError, PipelineError, OSError) as exc:
                err = as_pipeline_error(exc, f"uploading {key}")
                if attempt >= self.attempts or not isinstance(err, TransientError):
                    return "failed", FailedUpload(key, str(path), str(err), attempt, isinstance(err, TransientError))
            time.sleep(full_jitter(attempt, self.backoff_s, self.backoff_max_s))

    def _unchanged(self, key: str, local: LocalFile, remote: RemoteObject | None, covered: bool) -> bool:
        if remote is None and covered:
            return False  # the listing saw every key under the prefix: it is new
        if remote is not None:
            if remote.size != local.size:
                return False
            if remote.md5 is not None:
                return remote.md5 == local.md5
        head = head_object(self.client, self.bucket, key)
        if head is None:
            return False
        stored = head.get("Metadata", {}).get("contenthash")
        if stored:
            return bool(stored == local.sha256)
        etag = RemoteObject(str(head.get("ETag", "")).strip('"'), int(head.get("ContentLength", -1)))
        return etag.size == local.size and etag.md5 == local.md5

    def _put(self, key: str, local: LocalFile, meta: Mapping[str, str]) -> None:
        extra: dict[str, Any] = {"ContentType": content_type(key),
                                 "Metadata": {**meta, "contenthash": local.sha256}}
        if local.size >= self.multipart_threshold:
            self.client.upload_file(str(local.path), self.bucket, key, ExtraArgs=extra, Config=self.transfer)
            return
        with local.path.open("rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body,
                                   ContentMD5=base64.b64encode(bytes.fromhex(local.md5)).decode(), **extra)


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


__all__ = [
    "CONTENT_TYPES",
    "FailedUpload",
    "LocalFile",
    "RemoteObject",
    "S3Publisher",
    "UploadReport",
    "as_pipeline_error",
    "content_type",
    "describe_file",
    "head_object",
    "is_missing",
    "is_transient",
    "list_objects",
    "parse_s3_url",
    "read_bytes",
    "read_json",
    "s3_client",
]
