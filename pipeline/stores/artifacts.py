"""Where stage outputs live between tasks.

Keys are POSIX-style relative paths (`jobs/<job_id>/<stage>/<name>`). Every write is atomic:
a reader (or a worker resuming after a crash) sees the old object or the new one, never half.
The local store is a folder; `artifacts_s3.S3ArtifactStore` is the same interface on a bucket.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from pipeline.errors import PermanentError, StorageFull

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
CHUNK = 1 << 20  # bytes a streamed copy holds at a time


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


def storage_full(exc: OSError, where: str, what: str) -> StorageFull:
    """The error for a write that found no space: which errno, where, and what could not be written."""
    code = errno.errorcode.get(exc.errno or 0, "ENOSPC")
    return StorageFull(f"{where} full: no space left on device ({code}) writing {what}")


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise PermanentError(f"invalid artifact key {key!r}")
    return key


class ArtifactStore(Protocol):
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    # The streaming twins, so an artifact as large as the corpus never has to be whole in a worker's memory:
    def put_file(self, key: str, path: Path) -> None: ...  # the object becomes the file's bytes
    def get_file(self, key: str, dest: Path) -> None: ...  # the object's bytes into a (new) local file
    def get_range(self, key: str, start: int, length: int) -> bytes: ...  # `length` bytes from `start`
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def put_json(self, key: str, value: Any) -> None: ...
    def get_json(self, key: str) -> Any: ...
    def tree(self, prefix: str) -> Path: ...
    def write_tree(self, prefix: str) -> Any: ...


def write_atomic(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Readers of `path` see the old bytes or the new ones, never part: a temporary file beside it, renamed over it.

    The temporary file is mkstemp's, private (0600) unless `mode` says otherwise.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalArtifactStore:
    """A folder shared by every worker on the machine (or a shared volume)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, data)
        except OSError as exc:
            if is_no_space(exc):
                raise storage_full(exc, "artifact store", f"artifact {key!r}") from exc
            raise

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise PermanentError(f"artifact {key!r} is missing") from exc

    def put_file(self, key: str, path: Path) -> None:
        target = self.path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-")
            try:
                with os.fdopen(fd, "wb") as fout, path.open("rb") as fin:
                    shutil.copyfileobj(fin, fout, CHUNK)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            if is_no_space(exc):
                raise storage_full(exc, "artifact store", f"artifact {key!r}") from exc
            raise

    def get_file(self, key: str, dest: Path) -> None:
        try:
            with self.path(key).open("rb") as fin, dest.open("wb") as fout:
                shutil.copyfileobj(fin, fout, CHUNK)
        except FileNotFoundError as exc:
            if not self.path(key).exists():
                raise PermanentError(f"artifact {key!r} is missing") from exc
            raise

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            with self.path(key).open("rb") as fh:
                fh.seek(start)
                return fh.read(length)
        except FileNotFoundError as exc:
            raise PermanentError(f"artifact {key!r} is missing") from exc

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix.rstrip("/"))
        if not base.exists():
            return []
        if base.is_file():
            return [prefix]
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def delete_prefix(self, prefix: str) -> None:
        target = self.path(prefix.rstrip("/"))
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)

    def put_json(self, key: str, value: Any) -> None:
        self.put_bytes(key, json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def tree(self, prefix: str) -> Path:
        """A local folder holding the tree stored under `prefix` (read only by convention)."""
        target = self.path(prefix.rstrip("/"))
        if not target.is_dir():
            raise PermanentError(f"artifact tree {prefix!r} is missing")
        return target

    @contextmanager
    def write_tree(self, prefix: str) -> Iterator[Path]:
        """Yield an empty folder; on success it replaces the tree at `prefix` in one rename."""
        target = self.path(prefix.rstrip("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".staging-{target.name}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            yield staging
            old = None
            if target.exists():
                old = target.parent / f".old-{target.name}-{uuid.uuid4().hex[:8]}"
                os.replace(target, old)
            os.replace(staging, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            # Raised by the block's own writes into the staging folder as much as by ours.
            if is_no_space(exc):
                raise storage_full(exc, "artifact store", f"artifact tree {prefix!r}") from exc
            raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
