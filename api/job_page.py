"""What the job page shows, built from the same job view `GET /jobs/<id>` answers (api/responses.py).

The page's script (api/static/job.js) builds the same things from that JSON when events arrive, so the page a
browser loads and the page it keeps up to date agree. The view holds no secrets: they live in the job's secrets
hash, which nothing here reads.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from pipeline.models import JSON, JobStatus

RETRYABLE = {JobStatus.FAILED.value, JobStatus.CANCELLED.value}
CANCELLABLE = {JobStatus.QUEUED.value, JobStatus.RUNNING.value}


@dataclass(frozen=True)
class Link:
    label: str
    href: str


def _seconds(start: str | None, end: str | None, now: datetime) -> float | None:
    if not start:
        return None
    began = datetime.fromisoformat(start)
    ended = datetime.fromisoformat(end) if end else now
    return max((ended - began).total_seconds(), 0.0)


def stage_rate(stage: JSON, now: datetime) -> str:
    """Items per second over the stage's wall time so far ("" before it starts or counts anything)."""
    seconds = _seconds(stage.get("started_at"), stage.get("finished_at"), now)
    done = int(stage["progress"]["done"])
    if not seconds or not done:
        return ""
    return f"{done / seconds:.1f}/s"


def issue_groups(issues: list[JSON]) -> list[tuple[str, list[JSON]]]:
    """Issues by kind, kinds in the order they first occur."""
    groups: dict[str, list[JSON]] = defaultdict(list)
    for issue in issues:
        groups[str(issue.get("kind") or "item")].append(issue)
    return list(groups.items())


def web_url(value: object) -> str | None:
    """An http(s) URL a link may point to; anything else (javascript:, data:, a path) is shown as text only."""
    if not isinstance(value, str):
        return None
    parts = urlsplit(value)
    return value if parts.scheme in ("http", "https") and parts.netloc else None


def result_links(view: JSON) -> tuple[list[Link], str | None]:
    """Links to the published revision (and the project's live pointer); the bundle folder on the server, if any."""
    links: list[Link] = []
    result = view.get("result") or {}
    info = result.get("publishInfo") or {}
    for key, label in (("publicContentUrl", "published revision"), ("publicPostsUrl", "shared posts"),
                       ("publicMediaUrl", "shared media")):
        url = web_url(info.get(key))
        if url:
            links.append(Link(label, url))
    if view.get("project_id"):
        links.append(Link("project's live revision (JSON)", f"/projects/{view['project_id']}"))
    folder = result.get("distFolder")
    return links, str(folder) if folder else None
