"""notify: deliver the job's callback payload, once per attempt.

The payload is prepared by the worker at `payload.json` (built once per outcome, so every retry
sends the same bytes under the same delivery id); this stage only masks secrets and delivers it.
A failed delivery raises; the task's retry policy decides what happens next.
"""

from __future__ import annotations

from pipeline.catalog import CALLBACK_PAYLOAD
from pipeline.http import callbacks
from pipeline.models import StageResult
from pipeline.stages.context import StageContext


def run(ctx: StageContext) -> StageResult:
    url = ctx.spec.callback_url
    if not url:
        return StageResult.done(delivered=False)
    payload = ctx.artifacts.get_json(CALLBACK_PAYLOAD.key(ctx.job_id))
    settings = ctx.settings
    # Defence in depth: no stage should put a secret in a result or a log, but none may leave here.
    payload = callbacks.redact(payload, (ctx.secret("git_token"), settings.callback_secret,
                                         settings.github_token, settings.openai_api_key))
    delivery_id = f"{ctx.job_id}:{payload['status']}"
    code = callbacks.deliver(url, payload, secret=settings.callback_secret,
                             timeout_s=settings.callback_timeout_s, delivery_id=delivery_id)
    ctx.log(f"callback delivered to {callbacks.display_url(url)} ({code})")
    # No "status" key: the worker spreads this summary over the job's callback record.
    return StageResult.done(delivered=True, http_status=code, delivery_id=delivery_id,
                            url=callbacks.display_url(url))
