"""The plan → fan out → wait → assemble shape shared by the stages whose work splits into batches.

1. plan (cursor None): the stage writes its batch inputs to the artifact store and says how many;
2. the batches go to every worker listening (`ctx.fan_out`); the stage waits without holding a worker
   process (`StageResult.more(wait_s)`), and a killed worker loses at most its batch in flight;
3. assemble: once every batch is done, the stage gathers their outputs in a fixed order.
The cursor holds only the phase and the batch count, so any worker can take over at any step.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.models import JSON, StageResult
from pipeline.stages.context import BatchFn, StageContext

POLL_S = 0.5


def run_fanned(ctx: StageContext, plan: Callable[[StageContext], int], batch: BatchFn,
               assemble: Callable[[StageContext, int], StageResult], poll_s: float = POLL_S) -> StageResult:
    """`poll_s`: the wait between looks at the batches; the last batch's end is seen up to that much later.
    Without fan-out (settings.fan_out false) the stage runs `batch` itself for each, saving `next` after each."""
    cursor: JSON | None = ctx.cursor
    if cursor is None:
        cursor = {"phase": "batches", "batches": plan(ctx), "dispatched": False}
        ctx.save_cursor(cursor)
        if ctx.should_yield():
            return StageResult.more()
    total = int(cursor["batches"])
    if cursor["phase"] == "batches" and not ctx.settings.fan_out and not cursor.get("dispatched"):
        done = int(cursor.get("next", 0))
        while done < total:
            batch(ctx, done)
            done += 1
            cursor = {**cursor, "next": done}
            ctx.save_cursor(cursor)
            ctx.progress(done, total)
            if done < total and ctx.should_yield():
                return StageResult.more()
        cursor = {**cursor, "phase": "assemble"}
        ctx.save_cursor(cursor)
    if cursor["phase"] == "batches":
        if not cursor.get("dispatched"):
            ctx.fan_out(range(total))
            cursor = {**cursor, "dispatched": True}
            ctx.save_cursor(cursor)
        pending = ctx.batches_pending(total)
        ctx.progress(total - len(pending), total)
        if pending:
            return StageResult.more(wait_s=poll_s)
        ctx.save_cursor({**cursor, "phase": "assemble"})
    return assemble(ctx, total)
