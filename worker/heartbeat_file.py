"""The heartbeat file's format, apart from the bootstep so that `repobuild probe worker` reads it without Celery."""

from __future__ import annotations

import time
from pathlib import Path


def write_beat(path: Path) -> None:
    """The beat is the wall time in the file (written whole, then renamed, so a probe never reads half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{time.time():.3f}\n")
    tmp.replace(path)


def beat_age(path: Path, now: float | None = None) -> float:
    """Seconds since the last beat; FileNotFoundError when there never was one, ValueError when it is not a beat."""
    text = path.read_text().strip()
    try:
        written = float(text)
    except ValueError:
        raise ValueError(f"{path} does not hold a heartbeat (got {text[:40]!r})") from None
    return (time.time() if now is None else now) - written
