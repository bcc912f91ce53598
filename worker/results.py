"""What a finished job reports: the stage summaries folded into one result object."""

from __future__ import annotations

from pipeline.models import JSON
from pipeline.plans import NOTIFY
from pipeline.stores.jobs import JobView


def job_result(job: JobView, issues: int | None = None) -> JSON:
    """`issues`: how many the job recorded, in every stage (parse's own count misses the source's and others')."""
    stages = {s.name: s.summary for s in job.stages if s.name != NOTIFY}
    result: JSON = {"jobId": job.spec.job_id, "task": job.spec.task, "stages": stages}
    fetch = stages.get("fetch", {})
    if fetch.get("commit"):
        result["commit"] = fetch["commit"]
    publish = stages.get("publish", {})
    if publish.get("path"):
        result["distFolder"] = publish["path"]
    uploaded = stages.get("upload", {})
    if uploaded.get("publishInfo"):
        result["publishInfo"] = uploaded["publishInfo"]
    parse = stages.get("parse", {})
    if parse:
        result["counts"] = {k: parse[k] for k in ("posts", "medias", "issues", "drafts") if k in parse}
    if issues is not None:
        result.setdefault("counts", {})["issues"] = issues
    built = [s for s in job.stages if s.name != NOTIFY]
    # Wall time from a stage's first start to done; beside it, the time all its tasks took (batches included).
    result["timings"] = {s.name: round(s.wall_s(), 3) for s in built}
    result["task_timings"] = {s.name: round(s.task_s, 3) for s in built}
    return result
