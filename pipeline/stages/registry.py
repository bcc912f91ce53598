"""Every stage, once: its name, its `run`, its batch function if it fans out, and the kind of work its task does.

The worker registers a task per entry (worker/tasks.py) and routes it by its kind of work (worker/queues.py);
plans.py says which stages each task type runs, in order. Adding a stage means its module, its entry here and
its place in plans.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pipeline.models import StageResult
from pipeline.stages import (
    build_db,
    embed_images,
    embed_text,
    enrich,
    existing,
    fetch,
    notify,
    parse,
    publish,
    source,
    upload,
)
from pipeline.stages.context import BatchFn, StageContext

# What a stage's task spends its time on: slow CPU work and fast I/O work are queued apart, so each
# queue can be scaled on its own length. Fanned-out batches are CPU work, whatever their stage.
Work = Literal["cpu", "io"]


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[StageContext], StageResult]
    work: Work
    batch: BatchFn | None = None


STAGES: tuple[Stage, ...] = (
    Stage("source", source.run, "io"),
    Stage("fetch", fetch.run, "io"),
    Stage("existing", existing.run, "io"),
    # parse's discovery and assemble are CPU work too (hashing media, the link graph), and so are its batches.
    Stage("parse", parse.run, "cpu", batch=parse.run_batch),
    # The embed stages only plan, wait and assemble; their batches do the CPU work.
    Stage("embed_text", embed_text.run, "io", batch=embed_text.run_batch),
    Stage("embed_images", embed_images.run, "io", batch=embed_images.run_batch),
    Stage("build_db", build_db.run, "cpu"),
    Stage("enrich", enrich.run, "cpu"),
    Stage("publish", publish.run, "io"),
    Stage("upload", upload.run, "io"),
    Stage("notify", notify.run, "io"),
)
