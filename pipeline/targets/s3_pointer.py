"""A project's `latest.json` pointer: moved only forward, by compare-and-swap on its ETag; or forced back.

Readers switch revisions by reading this one small object, so it is written last, in one PUT.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.errors import PermanentError, TransientError
from pipeline.http.retry import backoff, retrying
from pipeline.targets.s3_client import S3Client, as_pipeline_error, is_precondition_failed, read_bytes


def _json_body(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def _put_pointer(client: S3Client, bucket: str, key: str, value: Mapping[str, Any], **condition: str) -> None:
    body = _json_body(dict(value))
    client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json",
                      # a pointer changes in place: CDNs and browsers must revalidate it every time
                      CacheControl="no-cache",
                      ContentMD5=base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode(),
                      **condition)


def _seq(value: Any, seq_field: str) -> float | None:
    if not isinstance(value, Mapping):
        return None
    seq = value.get(seq_field)
    return float(seq) if isinstance(seq, int | float) and not isinstance(seq, bool) else None


class _Contended(TransientError):
    """The pointer changed between our read and our conditional write."""


def move_pointer(client: S3Client, bucket: str, key: str, new: Mapping[str, Any], seq_field: str = "seq",
                 *, attempts: int = 20) -> bool:
    """Write `new` at `key` only if its `seq_field` is greater than the stored one. True when moved.

    A compare-and-swap: the write is conditional on the ETag just read (`IfNoneMatch="*"` when there is
    no pointer yet), so two publishers racing cannot move it backwards; the loser re-reads and decides
    again. A stored pointer without a numeric seq (or not JSON at all) is treated as older than any.
    That loop is ours, not botocore's (a 412 is an answer, not a failure) nor the stage's (a race settles
    in milliseconds, and a stage retry would wait seconds and spend one of the job's attempts).
    """
    new_seq = _seq(new, seq_field)
    if new_seq is None:
        raise PermanentError(f"pointer {key}: {seq_field!r} must be a number, got {new.get(seq_field)!r}")

    def swap() -> bool:
        body, etag = read_bytes(client, bucket, key)
        if body is not None:
            try:
                current = json.loads(body)
            except ValueError:
                current = None  # garbage is overwritten, still conditionally on the version read
            if isinstance(current, Mapping) and dict(current) == dict(new):
                return True  # our own earlier write whose answer was lost, or an identical publish
            old = _seq(current, seq_field)
            if old is not None and old >= new_seq:
                return False
        try:
            if etag is None:
                _put_pointer(client, bucket, key, new, IfNoneMatch="*")
            else:
                _put_pointer(client, bucket, key, new, IfMatch=etag)
            return True
        except (ClientError, BotoCoreError) as exc:
            if is_precondition_failed(exc):
                raise _Contended(f"pointer s3://{bucket}/{key}: changed while it was written") from exc
            raise as_pipeline_error(exc, f"writing the pointer s3://{bucket}/{key}") from exc

    try:
        return retrying(attempts=attempts, wait=backoff(0.02, 0.5), on=_Contended)(swap)
    except _Contended:
        raise TransientError(f"pointer s3://{bucket}/{key}: still contended after {attempts} attempts") from None


def force_pointer(client: S3Client, bucket: str, key: str, new: Mapping[str, Any]) -> None:
    """Write `new` at `key` whatever is there (a rollback to an older revision)."""
    try:
        _put_pointer(client, bucket, key, new)
    except (ClientError, BotoCoreError) as exc:
        raise as_pipeline_error(exc, f"writing the pointer s3://{bucket}/{key}") from exc


__all__ = ["force_pointer", "move_pointer"]
