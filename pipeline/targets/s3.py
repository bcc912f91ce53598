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

The client, its error mapping and reading are in s3_client.py; the `latest.json` pointer in s3_pointer.py.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
)

from pipeline.errors import PermanentError, PipelineError, TransientError
from pipeline.http.retry import backoff, retrying
from pipeline.settings import Settings
from pipeline.targets.s3_client import (
    RemoteObject,
    S3Client,
    as_pipeline_error,
    head_object,
    list_objects,
    read_json,
    s3_client,
)

# boto3 ships no type information and the project does not depend on boto3-stubs.
ProgressCallback = Callable[[int, int], None]

MIB = 1024 * 1024
MIN_PART_BYTES = 5 * MIB  # S3's smallest allowed part (except the last)
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
        tries = retrying(attempts=self.attempts, wait=backoff(self.backoff_s, self.backoff_max_s))
        try:
            return tries(self._send, key, local, remote, covered, meta)
        except PipelineError as err:
            return "failed", FailedUpload(key, str(path), str(err), int(tries.statistics["attempt_number"]),
                                          isinstance(err, TransientError))

    def _send(self, key: str, local: LocalFile, remote: RemoteObject | None, covered: bool,
              meta: Mapping[str, str]) -> tuple[str, str]:
        """One attempt at one file: ("uploaded"|"skipped", sha256), or the pipeline error of its failure.

        A file is retried as a whole on top of botocore's retries of each request: a multipart upload that
        lost a part is aborted by boto3 and must start again, and the skip decision is made again with it.
        """
        try:
            if self._unchanged(key, local, remote, covered):
                return "skipped", local.sha256
            self._put(key, local, meta)
            return "uploaded", local.sha256
        except (ClientError, BotoCoreError, S3UploadFailedError, OSError) as exc:
            raise as_pipeline_error(exc, f"uploading {key}") from exc

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


__all__ = [
    "CONTENT_TYPES",
    "FailedUpload",
    "LocalFile",
    "S3Publisher",
    "UploadReport",
    "content_type",
    "describe_file",
]
