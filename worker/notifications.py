"""The notify stage's worker half: turn the job's outcome into the original's callback payload once,
then let the pure stage deliver it (retries come from the base task's backoff)."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.catalog import CALLBACK_PAYLOAD, FAILED_UPLOAD
from pipeline.http import callbacks
from pipeline.models import JSON, JobStatus, StageResult
from pipeline.stages import notify
from pipeline.stores.jobs import JobView
from worker.context import RedisStageContext


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def job_logs(ctx: RedisStageContext) -> list[JSON]:
    """The original's `logs`: [{type: info|error, jobId, timestamp, message}] from the event stream."""
    logs: list[JSON] = []
    for _id, ev in ctx.store.events(ctx.job_id):
        if ev.get("type") == "progress":
            continue
        kind = "error" if ev.get("level") == "error" or ev.get("type") in ("failed", "retry") else "info"
        logs.append({"type": kind, "jobId": ctx.job_id, "timestamp": _iso(float(ev["ts"])), "message": ev["message"]})
    return logs


def build_payload(ctx: RedisStageContext, job: JobView) -> JSON:
    finished = job.finished_at or job.updated_at
    if job.status == JobStatus.COMPLETED:
        return callbacks.success_payload(ctx.job_id, job.result or {}, job.started_at or job.created_at, finished,
                                         job_logs(ctx))
    if job.status == JobStatus.CANCELLED:
        error = "Job cancelled"
    else:
        error = (job.error or {}).get("message", "job failed")
    payload = callbacks.failure_payload(ctx.job_id, error, finished, job_logs(ctx))
    failed_upload = FAILED_UPLOAD.key(ctx.job_id)
    if ctx.artifacts.exists(failed_upload):
        # Which files did not make it, in the original's shape (the revision was not published).
        payload["publishInfo"] = ctx.artifacts.get_json(failed_upload)
    return payload


def run_notify(ctx: RedisStageContext) -> StageResult:
    key = CALLBACK_PAYLOAD.key(ctx.job_id)
    # Built once per outcome, so every retry delivers the same bytes (receivers dedupe on the delivery id).
    if not ctx.artifacts.exists(key):
        ctx.artifacts.put_json(key, build_payload(ctx, ctx.store.get(ctx.job_id)))
    return notify.run(ctx)
