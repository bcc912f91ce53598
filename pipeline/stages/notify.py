"""notify: the job's outcome → the original's callback (CONTRACT §1), delivered to its callback URL.

It runs once the outcome is known (plans.may_run): after the last build stage, or once a stage was
dead-lettered or the job cancelled. The payload is built from the job view once per outcome and kept
(CALLBACK_PAYLOAD), so every retry sends the same bytes under the same delivery id; a retried job
gets a fresh one (worker/submission.py). A failed delivery raises; the task's retry policy decides
what happens next, and a callback that fails for good is recorded on the job, never failing it.
"""

from __future__ import annotations

from pipeline.catalog import CALLBACK_PAYLOAD, FAILED_UPLOAD
from pipeline.http import callbacks
from pipeline.http.address_policy import outbound_policy
from pipeline.http.credentials import GIT_TOKEN, original_key, restore
from pipeline.models import JSON, JobStatus, StageResult
from pipeline.stages.context import StageContext


def run(ctx: StageContext) -> StageResult:
    if not ctx.spec.callback_url:
        return StageResult.done(delivered=False)
    # The URL as the caller gave it, with its password or token: sent, never stored or shown.
    url = restore(ctx.spec.callback_url, ctx.secret(original_key("callback_url")))
    key = CALLBACK_PAYLOAD.key(ctx.job_id)
    if not ctx.artifacts.exists(key):
        ctx.artifacts.put_json(key, payload(ctx))
    body: JSON = ctx.artifacts.get_json(key)
    settings = ctx.settings
    # Defence in depth: no stage should put a secret in a result or a log, but none may leave here.
    body = callbacks.redact(body, (ctx.secret(GIT_TOKEN), settings.callback_secret,
                                   settings.github_token, settings.openai_api_key))
    delivery_id = f"{ctx.job_id}:{body['status']}"
    code = callbacks.deliver(url, body, secret=settings.callback_secret, timeout_s=settings.callback_timeout_s,
                             delivery_id=delivery_id, policy=outbound_policy(settings))
    ctx.log(f"callback delivered to {callbacks.display_url(url)} ({code})")
    # No "status" key: the worker spreads this summary over the job's callback record (plans.callback_record).
    return StageResult.done(delivered=True, http_status=code, delivery_id=delivery_id,
                            url=callbacks.display_url(url))


def payload(ctx: StageContext) -> JSON:
    """The callback body of the job's outcome, as the job view and its events tell it now."""
    job = ctx.job()
    logs = job_logs(ctx)
    finished = job.finished_at or job.updated_at
    if job.status == JobStatus.COMPLETED:
        return callbacks.success_payload(ctx.job_id, job.result or {}, job.started_at or job.created_at, finished,
                                         logs)
    error = "Job cancelled" if job.status == JobStatus.CANCELLED else (job.error or {}).get("message", "job failed")
    body = callbacks.failure_payload(ctx.job_id, error, finished, logs)
    failed_upload = FAILED_UPLOAD.key(ctx.job_id)
    if ctx.artifacts.exists(failed_upload):
        # Which files did not make it, in the original's shape (the revision was not published).
        body["publishInfo"] = ctx.artifacts.get_json(failed_upload)
    return body


def job_logs(ctx: StageContext) -> list[JSON]:
    """The original's `logs`: [{type: info|error, jobId, timestamp, message}] from the job's events."""
    return [callbacks.log_entry(ctx.job_id, event["message"], float(event["ts"]),
                                error=event.get("level") == "error" or event.get("type") in ("failed", "retry"))
            for event in ctx.events() if event.get("type") != "progress"]
