"""An ArtifactStore on S3 (`REPOBUILD_ARTIFACTS=s3://bucket/prefix`), for workers on several machines.

Same keys, same errors as LocalArtifactStore (a missing key is a PermanentError). Single objects are
atomic on S3 by nature. Trees cannot be renamed into place as a folder can, so a tree written with
`write_tree` has a manifest, `.repobuild-trees/<prefix>.json` beside the artifacts, written after every
file is up: that write is the commit. Until it exists the tree is missing, as a half-written local
staging folder is invisible; files no longer in the tree are deleted only after it. `tree()` reads the
manifest, downloads only what its local cache lacks, and checks each download against the manifest's
SHA-256, so a tree rewritten while it is read gives a TransientError (retry) rather than a mix of two.
The manifest also keeps what S3 has no objects for: symlinks and empty folders.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.errors import PermanentError, TransientError
from pipeline.settings import Settings
from pipeline.stores.artifacts import ArtifactStore, LocalArtifactStore, _check_key
from pipeline.targets.s3 import MIB, S3Publisher
from pipeline.targets.s3_client import (
    S3Client,
    as_pipeline_error,
    head_object,
    is_missing,
    list_objects,
    parse_s3_url,
    s3_client,
)

TREES = ".repobuild-trees"
_DELETE_BATCH = 1000  # DeleteObjects' limit


class S3ArtifactStore:
    def __init__(self, client: S3Client, bucket: str, prefix: str = "", *, cache_dir: str | os.PathLike[str],
                 temp_dir: str | os.PathLike[str] | None = None, max_concurrency: int = 8,
                 multipart_threshold_mb: int = 16) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            _check_key(self.prefix)
        self.cache_dir = Path(cache_dir)
        self.temp_dir = str(temp_dir) if temp_dir is not None else None
        self.max_concurrency = max(1, max_concurrency)
        self.publisher = S3Publisher(client, bucket, max_concurrency=max_concurrency,
                                     multipart_threshold_mb=multipart_threshold_mb)

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None, client: S3Client | None = None
                      ) -> S3ArtifactStore:
        bucket, prefix = parse_s3_url(url or settings.artifacts)
        cache = settings.artifacts_cache or str(Path(settings.temp_dir) / "repobuild" / "artifact-cache")
        return cls(client if client is not None else s3_client(settings), bucket, prefix, cache_dir=cache,
                   temp_dir=settings.temp_dir, max_concurrency=settings.s3_max_concurrency,
                   multipart_threshold_mb=settings.s3_multipart_threshold_mb)

    def __repr__(self) -> str:
        return f"S3ArtifactStore(s3://{self.bucket}/{self.prefix})"

    # keys

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    def _manifest_key(self, base: str) -> str:
        return self._key(f"{TREES}/{base}.json")

    # single objects

    def put_bytes(self, key: str, data: bytes) -> None:
        full = self._key(key)
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        try:
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data, ContentMD5=md5)
        except (ClientError, BotoCoreError) as exc:
            raise as_pipeline_error(exc, f"writing artifact {key!r}") from exc

    def get_bytes(self, key: str) -> bytes:
        full = self._key(key)
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=full)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            if is_missing(exc):
                raise PermanentError(f"artifact {key!r} is missing") from exc
            raise as_pipeline_error(exc, f"reading artifact {key!r}") from exc
        return body

    def put_file(self, key: str, path: Path) -> None:
        """Streamed from the file (multipart above the threshold), never read whole."""
        full = self._key(key)
        report = self.publisher.upload({full: path}, existing={})
        if report.failed:
            first = report.failed[0]
            msg = f"writing artifact {key!r}: {first.error}"
            raise TransientError(msg) if first.transient else PermanentError(msg)

    def get_file(self, key: str, dest: Path) -> None:
        full = self._key(key)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
            with dest.open("wb") as fh:
                for chunk in body.iter_chunks(MIB):
                    fh.write(chunk)
        except (ClientError, BotoCoreError) as exc:
            if is_missing(exc):
                raise PermanentError(f"artifact {key!r} is missing") from exc
            raise as_pipeline_error(exc, f"reading artifact {key!r}") from exc

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        full = self._key(key)
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=full, Range=f"bytes={start}-{start + length - 1}")
            body: bytes = resp["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            if is_missing(exc):
                raise PermanentError(f"artifact {key!r} is missing") from exc
            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""  # past the end, as a local file's read gives
            raise as_pipeline_error(exc, f"reading artifact {key!r}") from exc
        return body

    def exists(self, key: str) -> bool:
        """True for an object and, as for a local folder, for a prefix holding objects."""
        full = self._key(key.rstrip("/"))
        if head_object(self.client, self.bucket, full) is not None:
            return True
        try:
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=full + "/", MaxKeys=1)
        except (ClientError, BotoCoreError) as exc:
            raise as_pipeline_error(exc, f"listing artifacts under {key!r}") from exc
        return bool(page.get("KeyCount") or page.get("Contents"))

    def list(self, prefix: str) -> list[str]:
        base = prefix.rstrip("/")
        full = self._key(base)
        under = list_objects(self.client, self.bucket, full + "/")
        if under:
            return sorted(self._rel(k) for k in under)
        return [prefix] if head_object(self.client, self.bucket, full) is not None else []

    def delete_prefix(self, prefix: str) -> None:
        base = prefix.rstrip("/")
        full = self._key(base)
        keys = [full, self._manifest_key(base)]
        keys += list_objects(self.client, self.bucket, full + "/")
        keys += list_objects(self.client, self.bucket, self._key(f"{TREES}/{base}") + "/")
        self._delete(keys)
        self._drop_cached(full)

    def put_json(self, key: str, value: Any) -> None:
        self.put_bytes(key, json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def _delete(self, keys: Sequence[str]) -> None:
        for i in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": k} for k in keys[i:i + _DELETE_BATCH]]
            try:
                resp = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except (ClientError, BotoCoreError) as exc:
                raise as_pipeline_error(exc, "deleting artifacts") from exc
            errors = [e for e in resp.get("Errors", ()) if e.get("Code") != "NoSuchKey"]
            if errors:
                first = errors[0]
                msg = f"S3 deleting artifacts: {len(errors)} not deleted, e.g. {first.get('Key')}: " \
                      f"{first.get('Code')} {first.get('Message', '')}"
                raise (TransientError(msg) if first.get("Code") in ("InternalError", "SlowDown",
                                                                     "ServiceUnavailable") else PermanentError(msg))

    # trees

    def _manifest(self, base: str) -> dict[str, Any] | None:
        key = self._manifest_key(base)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            if is_missing(exc):
                return None
            raise as_pipeline_error(exc, f"reading the manifest of tree {base!r}") from exc
        manifest: dict[str, Any] = json.loads(body)
        return manifest

    @contextmanager
    def write_tree(self, prefix: str) -> Iterator[Path]:
        """Yield an empty folder; on success its content becomes the tree at `prefix`."""
        base = _check_key(prefix.rstrip("/"))
        if self.temp_dir:
            Path(self.temp_dir).mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="repobuild-tree-", dir=self.temp_dir))
        try:
            yield staging
            self._commit_tree(base, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _commit_tree(self, base: str, staging: Path) -> None:
        files: dict[str, Path] = {}
        links: dict[str, str] = {}
        dirs: list[str] = []
        for root, dirnames, filenames in os.walk(staging):
            here = Path(root)
            for name in list(dirnames):
                if (here / name).is_symlink():
                    dirnames.remove(name)  # os.walk lists a symlinked folder as a folder; it is a link
                    filenames.append(name)
            if here != staging and not dirnames and not filenames:
                dirs.append(here.relative_to(staging).as_posix())
            for name in filenames:
                path = here / name
                rel = path.relative_to(staging).as_posix()
                if path.is_symlink():
                    links[rel] = os.readlink(path)
                elif path.is_file():
                    files[rel] = path
        full = self._key(base)
        existing = list_objects(self.client, self.bucket, full + "/")
        report = self.publisher.upload({f"{full}/{rel}": path for rel, path in files.items()}, existing=existing)
        if report.failed:
            first = report.failed[0]
            msg = f"tree {base!r}: {len(report.failed)} of {report.total} files not stored, e.g. {first.error}"
            raise TransientError(msg) if all(f.transient for f in report.failed) else PermanentError(msg)
        manifest = {
            "version": 1,
            "files": {rel: {"sha256": report.hashes[f"{full}/{rel}"], "size": path.stat().st_size}
                      for rel, path in sorted(files.items())},
            "links": dict(sorted(links.items())),
            "dirs": sorted(dirs),
        }
        self.put_json(f"{TREES}/{base}.json", manifest)
        stale = sorted(set(existing) - {f"{full}/{rel}" for rel in files})
        self._delete(stale)

    def tree(self, prefix: str) -> Path:
        """A local folder holding the tree stored under `prefix` (read only by convention)."""
        base = _check_key(prefix.rstrip("/"))
        manifest = self._manifest(base)
        if manifest is None:
            raise PermanentError(f"artifact tree {prefix!r} is missing")
        full = self._key(base)
        cache = self._cache_for(full)
        cache.mkdir(parents=True, exist_ok=True)
        with _locked(cache / ".lock"):
            # read by delete_prefix, which finds the caches of deleted trees by it
            (cache / "source.json").write_text(json.dumps({"bucket": self.bucket, "key": full}))
            return self._materialise(cache, full, manifest)

    def _cache_for(self, full: str) -> Path:
        return self.cache_dir / hashlib.sha256(f"{self.bucket}\n{full}".encode()).hexdigest()[:32]

    def _materialise(self, cache: Path, full: str, manifest: dict[str, Any]) -> Path:
        root = cache / "tree"
        root.mkdir(exist_ok=True)
        files: dict[str, dict[str, Any]] = {_check_key(rel): info for rel, info in manifest.get("files", {}).items()}
        links: dict[str, str] = {_check_key(rel): str(t) for rel, t in manifest.get("links", {}).items()}
        dirs = {_check_key(rel) for rel in manifest.get("dirs", [])}
        index_path = cache / "index.json"
        index: dict[str, list[Any]] = json.loads(index_path.read_text()) if index_path.exists() else {}

        # Whatever the manifest does not name goes: an older tree's files, interrupted downloads.
        for dirpath, dirnames, filenames in os.walk(root, topdown=False):
            here = Path(dirpath)
            for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
                path = here / name
                rel = path.relative_to(root).as_posix()
                keep = (links.get(rel) == os.readlink(path)) if path.is_symlink() else rel in files
                if not keep:
                    path.unlink()
                    index.pop(rel, None)
            if here != root and not any(here.iterdir()) and here.relative_to(root).as_posix() not in dirs:
                here.rmdir()

        def fresh(rel: str) -> bool:
            path = root / rel
            if path.is_symlink() or not path.is_file():
                return False
            st = path.stat()
            return index.get(rel) == [files[rel]["sha256"], st.st_size, st.st_mtime_ns]

        needed = [rel for rel in files if not fresh(rel)]
        lock = threading.Lock()
        try:
            with ThreadPoolExecutor(self.max_concurrency) as pool:
                for rel, st in zip(needed, pool.map(
                        lambda r: self._download(f"{full}/{r}", root, r, str(files[r]["sha256"])), needed),
                        strict=True):
                    with lock:
                        index[rel] = [files[rel]["sha256"], st.st_size, st.st_mtime_ns]
        finally:
            # Written even when a download failed, so the next call fetches only what is still missing.
            tmp = index_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(index))
            os.replace(tmp, index_path)
        for rel in sorted(dirs):
            (root / rel).mkdir(parents=True, exist_ok=True)
        for rel, target in links.items():
            path = root / rel
            if not path.is_symlink():
                _inside(root, path)
                path.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, path)
        return root

    def _download(self, key: str, root: Path, rel: str, sha256: str) -> os.stat_result:
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        _inside(root, dest)
        # No loop of our own: botocore retries the GET (s3_client.py), and a body cut off mid-stream is a
        # TransientError that retries the stage, whose next `tree()` skips every file it recorded as fetched.
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as fh:
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
                for chunk in body.iter_chunks(MIB):
                    fh.write(chunk)
                    digest.update(chunk)
            if digest.hexdigest() != sha256:
                raise TransientError(f"artifact {self._rel(key)!r} changed while its tree was read")
            os.replace(tmp, dest)
            return dest.stat()
        except (ClientError, BotoCoreError) as exc:
            if is_missing(exc):
                raise TransientError(f"artifact {self._rel(key)!r} of a tree vanished (rewritten?)") from exc
            raise as_pipeline_error(exc, f"downloading artifact {self._rel(key)!r}") from exc
        finally:
            Path(tmp).unlink(missing_ok=True)  # a no-op once it is in place

    def _drop_cached(self, full: str) -> None:
        if not self.cache_dir.is_dir():
            return
        for cache in self.cache_dir.iterdir():
            source = cache / "source.json"
            if not source.is_file():
                continue
            info = json.loads(source.read_text())
            key = str(info.get("key", ""))
            if info.get("bucket") == self.bucket and (key == full or key.startswith(full + "/")):
                with _locked(cache / ".lock"):
                    shutil.rmtree(cache / "tree", ignore_errors=True)
                    (cache / "index.json").unlink(missing_ok=True)
                    source.unlink(missing_ok=True)


def _inside(root: Path, path: Path) -> None:
    # A manifest is ours, but the bucket is shared infrastructure: never write through a symlink out of the cache.
    if not path.parent.resolve().is_relative_to(root.resolve()):
        raise PermanentError(f"tree entry {path} resolves outside its cache folder")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two workers on one machine may materialise the same tree; one at a time per cache folder.
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def artifact_store(settings: Settings) -> ArtifactStore:
    """The store `settings.artifacts` names: `s3://bucket/prefix`, else a local (or shared) folder."""
    if settings.artifacts.startswith("s3://"):
        return S3ArtifactStore.from_settings(settings)
    return LocalArtifactStore(settings.artifacts)


__all__ = ["S3ArtifactStore", "TREES", "artifact_store"]
