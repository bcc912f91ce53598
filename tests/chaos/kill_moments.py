"""Killing a whole worker at a chosen moment of a job, and reading from its checkpoints what the kill cost.

A moment is a stage of the job's plan (`parse`) or one of the fanned-out batch tasks of a stage
(`embed_text:batch`): the test waits until it runs, kills, and takes a `Snapshot` of the job's state
(every stage's status, cursor, progress and attempts; every batch's runs and completion). Comparing that
snapshot with the next one (at the next kill, or once the job is over) says how much work done before the
kill was done again, and whether the job moved at all once a new worker was up.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.catalog import job_key
from pipeline.models import StageState, StageStatus
from pipeline.stages.embed_images import IMAGES_PER_BATCH
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.jobs import JobStore

FANNED = ("parse", "embed_text", "embed_images")
BATCH = ":batch"


def moments_of(plan: tuple[str, ...]) -> list[str]:
    """Where a kill can land in a job of this plan: each stage, and each fanned-out stage's batches."""
    out: list[str] = []
    for stage in plan:
        out.append(stage)
        if stage in FANNED:
            out.append(stage + BATCH)
    return out


@dataclass
class Snapshot:
    stages: dict[str, StageState]
    runs: dict[str, dict[int, int]] = field(default_factory=dict)
    done: dict[str, set[int]] = field(default_factory=dict)
    leased: dict[str, set[int]] = field(default_factory=dict)

    def signature(self) -> str:
        """What changes when the job makes progress: a stage's status, cursor or count, a batch finishing."""
        return json.dumps({"stages": {n: [s.status.value, s.cursor, s.done, s.total] for n, s in self.stages.items()},
                           "done": {n: sorted(d) for n, d in self.done.items()}}, sort_keys=True, default=str)

    def in_progress(self) -> tuple[str, bool]:
        """(moment, whether work was running): the first stage not done, or its batch when one was running."""
        for name, state in self.stages.items():
            if state.status != StageStatus.DONE:
                if self.leased.get(name):
                    return name + BATCH, True
                return name, state.status == StageStatus.RUNNING
        return "over", False


def snapshot(store: JobStore, job_id: str) -> Snapshot:
    job = store.get(job_id)
    snap = Snapshot({s.name: s for s in job.stages})
    for name in FANNED:
        if name in snap.stages:
            batches = store.batches(job_id, name)
            snap.runs[name] = batches.runs()
            snap.done[name] = batches.done()
            total = int((snap.stages[name].cursor or {}).get("batches") or 0)
            snap.leased[name] = batches.leased(set(range(total)))
    return snap


def _passed(store: JobStore, job_id: str, stage: str) -> bool:
    """Whether the job is past `stage`: it and every stage before it are done."""
    job = store.get(job_id)
    names = [s.name for s in job.stages]
    first = job.next_stage()
    return first is None or names.index(first.name) > names.index(stage)


def _batch_running(store: JobStore, job_id: str, stage: str) -> bool:
    # The stage itself mostly waits in the broker (a countdown) while its batches run: only they count here.
    cursor = store.stage(job_id, stage).cursor or {}
    total = int(cursor.get("batches") or 0)
    return cursor.get("phase") == "batches" and bool(store.batches(job_id, stage).leased(set(range(total))))


def wait_for(store: JobStore, job_id: str, moment: str, timeout: float = 300) -> bool:
    """Block until the moment comes: its stage has just started (read off the job's event stream, which
    wakes us within a millisecond, as most stages last tens of them), or one of its batches runs.
    False when the job got past it first."""
    stage, _, batch = moment.partition(":")
    deadline = time.monotonic() + timeout
    seen = store.events(job_id)
    after = seen[-1][0] if seen else "0-0"
    if not batch and store.stage(job_id, stage).status == StageStatus.RUNNING:
        return True
    while time.monotonic() < deadline:
        if batch:
            if _batch_running(store, job_id, stage):
                return True
            time.sleep(0.005)
        else:
            for event_id, event in store.follow_events(job_id, after, block_ms=200):
                after = event_id
                if event.get("stage") == stage and event.get("type") in ("started", "resumed"):
                    return True
        if _passed(store, job_id, stage):
            return False
    raise AssertionError(f"{job_id}: {moment} never came within {timeout}s: {store.get(job_id)}")


def wait_progress(store: JobStore, job_id: str, since: Snapshot, timeout: float = 300) -> float:
    """Block until the job's state moves past `since`; returns when (time.monotonic())."""
    mark = since.signature()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if snapshot(store, job_id).signature() != mark:
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"{job_id}: no progress within {timeout}s of the new worker: {store.get(job_id)}")


@dataclass
class Redone:
    """Work done before a kill and done again after it, in the stage's own items (posts, texts, files)."""

    stage: str
    items: int
    bound: int
    problems: list[str]


def _batch_sizes(artifacts: LocalArtifactStore, job_id: str, stage: str) -> dict[int, int]:
    sizes: dict[int, int] = {}
    index = artifacts.path(job_key(job_id, stage, "index.json"))
    if stage == "parse" and index.is_file():  # parse's batches are cut from its index, `batch` posts each
        body = json.loads(index.read_text())
        posts, size = len(body["posts"]), int(body["batch"])
        return {n: min(size, posts - n * size) for n in range(-(-posts // size))}
    # embed_text's batches name posts and list the inputs they came to in `items/` once done; embed_images' list
    # their items up front
    listed = artifacts.path(job_key(job_id, stage, "items"))
    folder = listed if listed.is_dir() else artifacts.path(job_key(job_id, stage, "batches"))
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        body: dict[str, Any] = json.loads(path.read_text())
        sizes[int(path.stem)] = len(body.get("keys") or body.get("items") or [])
    return sizes


def redone(before: Snapshot, after: Snapshot, moment: str, running: bool, artifacts: LocalArtifactStore,
           job_id: str, batch_sizes: dict[str, int]) -> Redone:
    """What the kill at `before` cost by `after`, read from cursors, progress, attempts and batch runs.

    `batch_sizes`: the settings' batch size of each batched stage (posts per parse batch, files per upload step).
    """
    stage = moment.partition(":")[0]
    problems: list[str] = []
    # A stage finished before the kill is never run again.
    for name, state in before.stages.items():
        if state.status == StageStatus.DONE and after.stages[name].attempts != state.attempts:
            problems.append(f"{name} was done at the kill and ran again ({state.attempts} → "
                            f"{after.stages[name].attempts} attempts)")
    if stage == "over":
        return Redone(stage, 0, 0, problems)
    was, now = before.stages[stage], after.stages[stage]
    if stage in FANNED and (was.cursor or {}).get("phase") == "batches":
        sizes = _batch_sizes(artifacts, job_id, stage)
        bound = max(sizes.values(), default=0) if stage in ("parse", "embed_text") else IMAGES_PER_BATCH
        runs_before, runs_after = before.runs.get(stage, {}), after.runs.get(stage, {})
        items = 0
        for n, count in runs_after.items():
            earlier = runs_before.get(n, 0)
            again = (count - earlier) - (0 if earlier else 1)  # runs beyond the first that work needed
            if n in before.done.get(stage, set()) and count > earlier:
                problems.append(f"{stage} batch {n} was complete at the kill and ran again")
            items += max(0, again) * sizes.get(n, bound)
        return Redone(stage, items, bound, problems)
    cursor = was.cursor or {}
    if not cursor and stage in batch_sizes:
        # Killed before its first checkpoint: what was in flight is the first batch (or parse's discovery).
        bound = batch_sizes[stage]
        return Redone(stage, min(bound, now.total or bound) if running else 0, bound, problems)
    if "next" in cursor and stage in batch_sizes:
        # A batched cursor: posts rendered (parse) or files sent (upload) up to `next` are checkpointed.
        bound = int(cursor.get("batch") or batch_sizes[stage])
        resumed = (now.resumed_from or {}).get("next") if now.attempts > was.attempts else None
        checkpointed = int(cursor["next"])
        lost = checkpointed - int(resumed if resumed is not None else checkpointed)
        if lost:
            problems.append(f"{stage} resumed at {resumed}, behind its checkpoint {checkpointed} at the kill")
        total = int(cursor.get("total") or was.total or 0)
        in_flight = min(bound, max(0, total - checkpointed)) if running else 0
        return Redone(stage, lost + in_flight, bound, problems)
    # An unbatched stage (or a phase without a batch cursor): the stage is its own one batch.
    unit = max(1, now.total or was.total or 1)
    return Redone(stage, unit if running else 0, unit, problems)
