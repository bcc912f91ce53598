"""Publish bundles to a local folder, one sub-folder per revision, `latest` pointing at the newest.

    <root>/<rev>/           a complete bundle, never a partial one
    <root>/latest           symlink → <rev> (relative, so the folder can be moved or mounted elsewhere)
    <root>/latest.json      {"revision", "path", "publishedAt"}
    <root>/.staging-*       being written; hidden, removed on failure or by the next attempt

Every switch a reader can observe is one rename: staging → <rev>, temp symlink → latest,
temp file → latest.json. Re-publishing a revision swaps the new folder for the old one atomically
where the kernel can (renameat2 RENAME_EXCHANGE), so even `latest` never dangles.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import PermanentError
from pipeline.stores.artifacts import is_no_space, storage_full, write_atomic
from pipeline.timestamps import now_iso

LATEST = "latest"
LATEST_JSON = "latest.json"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux 3.15+). False where unsupported: the caller falls back."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    return int(renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)) == 0


def check_revision(rev: str) -> str:
    if not rev or rev.startswith(".") or "/" in rev or "\\" in rev or "\0" in rev or rev in (LATEST, LATEST_JSON):
        raise PermanentError(f"revision id {rev!r} cannot name a folder of the output")
    return rev


class LocalFolderTarget:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()

    def revision_path(self, rev: str) -> Path:
        return self.root / check_revision(rev)

    def latest(self) -> str | None:
        """The revision `latest` points at, if any."""
        link = self.root / LATEST
        return os.readlink(link) if link.is_symlink() else None

    @contextmanager
    def open_revision(self, rev: str) -> Iterator[Path]:
        """Yield an empty hidden folder to write the bundle into.

        When the block ends normally the folder becomes `<root>/<rev>` (replacing an earlier copy of
        the same revision) and `latest` points at it. When it raises, nothing visible changes.
        """
        target = self.revision_path(rev)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PermanentError(f"output folder {self.root} cannot be created: {exc}") from exc
        self._sweep(rev)
        staging = self.root / f".staging-{rev}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            yield staging
            self._install(staging, target)
            self._point_latest(rev)
        except OSError as exc:
            if is_no_space(exc):
                raise storage_full(exc, "output folder", f"revision {rev!r}") from exc
            raise
        finally:
            # After a swap the staging name holds the previous copy of the revision.
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _sweep(self, rev: str) -> None:
        # Leftovers of an attempt at this revision that died (kill -9) before cleaning up. The stage
        # lease guarantees no live attempt at the same revision is writing them.
        for p in self.root.iterdir():
            if p.name.startswith((f".staging-{rev}-", f".old-{rev}-")) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)

    def _install(self, staging: Path, target: Path) -> None:
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise PermanentError(f"{target} exists and is not a revision folder")
        if not target.exists():
            os.rename(staging, target)
            return
        if _exchange(staging, target):
            return
        old = self.root / f".old-{target.name}-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
        os.rename(staging, target)
        shutil.rmtree(old, ignore_errors=True)

    def _point_latest(self, rev: str) -> None:
        link = self.root / LATEST
        if link.exists() and not link.is_symlink():
            raise PermanentError(f"{link} exists and is not a symlink; remove it so `latest` can be published")
        tmp = self.root / f".latest-{uuid.uuid4().hex[:8]}"
        os.symlink(rev, tmp)
        try:
            os.replace(tmp, link)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        info = {"revision": rev, "path": str(self.root / rev),
                "publishedAt": now_iso()}
        # 0644: mkstemp's 0600 would hide the pointer from a web server running as another user
        write_atomic(self.root / LATEST_JSON, json.dumps(info, ensure_ascii=False, sort_keys=True).encode(), mode=0o644)
