"""What a WordPress import reports (counts, issues, files written), and the URL keys it matches media and
permalinks by."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from pipeline.models import JSON, Issue


@dataclass
class ImportReport:
    posts: int = 0
    pages: int = 0
    drafts: int = 0
    withheld: int = 0
    comments_skipped: int = 0
    attachments: int = 0
    attachments_downloaded: int = 0
    attachments_failed: int = 0
    skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def to_json(self) -> JSON:
        return {
            "posts": self.posts,
            "pages": self.pages,
            "drafts": self.drafts,
            "withheld": self.withheld,
            "commentsSkipped": self.comments_skipped,
            "attachments": self.attachments,
            "attachmentsDownloaded": self.attachments_downloaded,
            "attachmentsFailed": self.attachments_failed,
            "skipped": self.skipped,
            "skippedReasons": dict(sorted(self.skipped_reasons.items())),
            "issues": [i.to_json() for i in self.issues],
            "files": list(self.files),
        }


def host_key(url: str) -> str:
    """Host and port, scheme-blind and without `www.`: sites move to https and drop www and keep their media."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().removeprefix("www.")
    port = parts.port
    return host if port in (None, 80, 443) else f"{host}:{port}"


def url_key(url: str) -> str:
    return host_key(url) + unquote(urlsplit(url).path)
