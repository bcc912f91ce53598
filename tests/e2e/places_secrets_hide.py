"""Everything a job leaves behind that a reader could see, as text to search for secrets in.

Each collector returns {where: bytes}: the name says where a hit was found. Compressed files are read
uncompressed, and kombu's message bodies in Redis (base64 inside a JSON envelope) are decoded, so a
secret cannot hide behind an encoding.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parents[2]


def readable(data: bytes) -> bytes:
    """`data` as a reader would see it: gzip unpacked, base64 message bodies decoded and appended."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return data
    return b"\n".join([data, *_message_bodies(value)])


def _message_bodies(value: Any) -> Iterator[bytes]:
    if isinstance(value, dict):
        body, props = value.get("body"), value.get("properties")
        if isinstance(body, str) and isinstance(props, dict) and props.get("body_encoding") == "base64":
            try:
                yield base64.b64decode(body)
            except binascii.Error:
                yield body.encode()
        for item in value.values():
            yield from _message_bodies(item)
    elif isinstance(value, list):
        for item in value:
            yield from _message_bodies(item)


def redis_contents(client: redis.Redis) -> dict[str, bytes]:
    """Every key of the database and every value it holds, whatever its type."""
    out: dict[str, bytes] = {}
    for key in client.scan_iter(count=500):
        kind = client.type(key).decode()
        parts: list[bytes]
        if kind == "string":
            parts = [client.get(key) or b""]
        elif kind == "hash":
            parts = [x for kv in client.hgetall(key).items() for x in kv]
        elif kind == "list":
            parts = list(client.lrange(key, 0, -1))
        elif kind == "set":
            parts = list(client.smembers(key))
        elif kind == "zset":
            parts = [member for member, _score in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            parts = [x for _id, fields in client.xrange(key) for kv in fields.items() for x in kv]
        elif kind == "none":
            continue  # expired between SCAN and TYPE
        else:
            raise AssertionError(f"Redis key {key!r} has a type this search does not read: {kind}")
        out[f"redis {key.decode(errors='replace')}"] = b"\n".join([key, *(readable(p) for p in parts)])
    return out


def files_under(root: Path, label: str) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {f"{label} {p.relative_to(root)}": b"\n".join([str(p).encode(), readable(p.read_bytes())])
            for p in sorted(root.rglob("*")) if p.is_file()}


def bucket_objects(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            got = s3.get_object(Bucket=bucket, Key=obj["Key"])
            meta = json.dumps(got.get("Metadata", {})).encode()
            out[f"s3 {obj['Key']}"] = b"\n".join([obj["Key"].encode(), meta, readable(got["Body"].read())])
    return out


def hits(places: dict[str, bytes], secret: str) -> list[str]:
    needle = secret.encode()
    return [where for where, data in places.items() if needle in data]


def _answers(url: str, auth: tuple[str, str] | None) -> bool:
    try:
        return httpx.get(url, auth=auth, timeout=2).status_code == 200
    except httpx.TransportError:
        return False  # not listening yet


@contextmanager
def serving(cmd: list[str], env: dict[str, str], log: Path, ready: str,
            auth: tuple[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A server process of ours (the API, Flower) logging to `log`, once `ready` answers 200; stopped after."""
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            if _answers(ready, auth):
                break
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
