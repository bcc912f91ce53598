"""A project's published revisions in the bucket: which one is live, and pointing back to an earlier one."""

from __future__ import annotations

from typing import Any

from pipeline.errors import PermanentError
from pipeline.models import JSON
from pipeline.settings import Settings
from pipeline.targets.bucket_layout import project_prefix
from pipeline.targets.s3 import S3Publisher
from pipeline.targets.s3_pointer import force_pointer
from pipeline.timestamps import now_iso


class NoSuchRevision(PermanentError):
    """The project has no complete revision by that id."""


def latest(settings: Settings, project_id: str, publisher: S3Publisher | None = None) -> JSON | None:
    pub = publisher or S3Publisher.from_settings(settings)
    value: Any = pub.get_json(f"{project_prefix(project_id, settings.s3_prefix)}/latest.json")
    return value if isinstance(value, dict) else None


def rollback(settings: Settings, project_id: str, rev: str) -> JSON:
    """Point `latest.json` at an earlier, complete revision. Keeps the seq, so a job submitted after
    the rolled-back revision still replaces it when it finishes, and an older one still cannot."""
    pub = S3Publisher.from_settings(settings)
    base = project_prefix(project_id, settings.s3_prefix)
    if not rev or "/" in rev:
        raise PermanentError(f"revision {rev!r} is not a revision id")
    if pub.get_json(f"{base}/{rev}/manifest.json") is None:
        raise NoSuchRevision(f"project {project_id} has no complete revision {rev} (no {base}/{rev}/manifest.json)")
    current = latest(settings, project_id, pub) or {}
    pointer = {"rev": rev, "jobId": rev, "seq": current.get("seq", 0),
               "publishedAt": now_iso(),
               "rolledBackFrom": current.get("rev")}
    force_pointer(pub.client, pub.bucket, f"{base}/latest.json", pointer)
    return pointer
