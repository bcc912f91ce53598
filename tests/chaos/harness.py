"""What the lease and delivery chaos tests share: a corpus, a reference run, the runs of a stage read from the
job's event log, the pool children of a worker, and the comparison of a faulted bundle with the reference."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from api.cli.local_services import WorkerProcess
from benchmarks.bundle_diff import diff
from pipeline.models import JobStatus, StageStatus
from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore, JobView
from tests.chaos.report import FaultRecord
from tests.conftest import CORPORA, ApiServer, wait_job

# Parse and the chain are what these faults hit; embedding would only make them slow.
PARSE_ONLY = {"skipEmbeddings": True}
# bundle_diff replaces each side's job id inside every string: an id must not be a word of the content.
REFERENCE = "ref-7c1e9a40"
# Events a stage run writes right after one of its fenced writes succeeded: a run whose lease is gone
# cannot write them, so their times bound when each run really held the stage.
RUN_EVENTS = frozenset({"started", "progress", "continue", "done"})


def til_corpus(tmp_path: Path, posts: int, broken_links: bool = False) -> Path:
    """The first `posts` posts of the til corpus (real markdown, links between posts, a few broken); with
    `broken_links`, each post also links to a post that does not exist: one issue per post."""
    root = tmp_path / "til"
    chosen = sorted(p for p in (CORPORA / "til").rglob("*.md") if ".git" not in p.parts)[:posts]
    for post in chosen:
        target = root / post.relative_to(CORPORA / "til")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(post, target)
        if broken_links:
            with target.open("a", encoding="utf-8") as f:
                f.write(f"\n\nSee also [a note that is gone](./gone-{target.stem}.md).\n")
    return root


def submit(api: ApiServer, source: Path, job_id: str) -> None:
    response = api.client.post("/jobs", json={"task": "process-all", "source": str(source), "job_id": job_id,
                                              "options": PARSE_ONLY})
    assert response.status_code in (200, 201, 202), response.text


def run_reference(api: ApiServer, store: JobStore, source: Path, job_id: str = REFERENCE) -> JobView:
    submit(api, source, job_id)
    job = wait_job(store, job_id, timeout=300)
    assert job.status == JobStatus.COMPLETED, job.error
    return job


def bundle_differences(settings: Settings, reference: str, job_id: str) -> list[str]:
    out = Path(settings.output)
    return diff(out / reference, out / job_id)


def issue_rows(store: JobStore, job_id: str) -> list[str]:
    """The job's recorded issues as sorted JSON strings, to compare with the reference's as a multiset."""
    return sorted(json.dumps(i, sort_keys=True) for i in store.issues(job_id))


@dataclass
class Run:
    """One run of a stage (one lease), from the first to the last event it wrote."""

    run: str
    first: float
    last: float
    kinds: list[str]


def stage_runs(store: JobStore, job_id: str, stage: str) -> list[Run]:
    runs: dict[str, Run] = {}
    for _id, ev in store.events(job_id, count=100_000):
        if ev.get("stage") != stage or ev.get("type") not in RUN_EVENTS or not ev.get("run"):
            continue
        ts = float(ev["ts"])
        r = runs.setdefault(ev["run"], Run(ev["run"], ts, ts, []))
        r.last = max(r.last, ts)
        r.kinds.append(ev["type"])
    return sorted(runs.values(), key=lambda r: r.first)


def overlapping_runs(runs: list[Run]) -> int:
    """Pairs of runs of one stage whose lifetimes intersect: each is a stage run twice at once."""
    return sum(1 for i, a in enumerate(runs) for b in runs[i + 1:] if b.first < a.last)


def check_against_reference(store: JobStore, settings: Settings, rec: FaultRecord, job_id: str,
                            stage: str = "parse") -> list[Run]:
    """What every fault here ends with: no two runs of the stage at once, the reference's issues with none
    recorded twice, and the reference's bundle. Counts what it finds in `rec` before it asserts."""
    runs = stage_runs(store, job_id, stage)
    overlaps = overlapping_runs(runs)
    rec.duplicate_deliveries += overlaps
    ours, theirs = issue_rows(store, job_id), issue_rows(store, REFERENCE)
    rec.duplicate_rows += max(0, len(ours) - len(theirs))
    assert overlaps == 0, runs
    assert ours == theirs, f"{len(ours)} issues recorded, the reference has {len(theirs)}"
    assert bundle_differences(settings, REFERENCE, job_id) == []
    return runs


def first_progress_after(store: JobStore, job_id: str, stage: str, after: float) -> float | None:
    """When the stage next made progress (a run event) after `after`, or None."""
    times = [float(ev["ts"]) for _id, ev in store.events(job_id, count=100_000)
             if ev.get("stage") == stage and ev.get("type") in RUN_EVENTS and float(ev["ts"]) > after]
    return min(times) if times else None


def pool_children(pid: int) -> list[int]:
    """The prefork pool processes of a worker: the children of its main process, from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found += [int(c) for c in children]
    return found


def started_events(store: JobStore, job_id: str, stage: str) -> list[dict[str, str]]:
    """The `started` events of the stage's runs, oldest first: each names its run and its pool process."""
    return [ev for _id, ev in store.events(job_id, count=100_000)
            if ev.get("type") == "started" and ev.get("stage") == stage]


def run_pid(store: JobStore, job_id: str, stage: str, timeout: float = 30) -> int:
    """The pid of the pool process running the stage's latest run (its `started` event names it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = started_events(store, job_id, stage)
        if started:
            return int(started[-1]["pid"])
        time.sleep(0.02)
    raise AssertionError(f"{job_id}/{stage} never started")


def stage_running_past(store: JobStore, job_id: str, stage: str, done: int) -> Callable[[JobView], bool]:
    """A wait_job condition: the stage runs and has done at least `done` items."""

    def check(job: JobView) -> bool:
        state = job.stage(stage)
        return state.status == StageStatus.RUNNING and state.done >= done and store.lease_held(job_id, stage)

    return check


def freeze_stage_runner(store: JobStore, workers: list[WorkerProcess], job_id: str, stage: str, done: int,
                        timeout: float = 120) -> tuple[WorkerProcess, str, float]:
    """SIGSTOP the whole worker whose pool process runs `stage`'s current run, once it has done `done` items.

    Returns the worker, the run it was running, and when it was stopped. The run can hand over to a continuation,
    which the other worker may take, between the look at who runs it and the stop: then the frozen worker holds
    nothing of the stage, so it is thawed and the look is made again."""
    deadline = time.monotonic() + timeout
    while True:
        wait_job(store, job_id, timeout=max(1.0, deadline - time.monotonic()),
                 until=stage_running_past(store, job_id, stage, done))
        frozen = worker_of(workers, run_pid(store, job_id, stage))
        assert frozen.proc is not None
        os.killpg(frozen.proc.pid, signal.SIGSTOP)
        paused_at = time.time()
        started = started_events(store, job_id, stage)[-1]
        latest = stage_runs(store, job_id, stage)[-1]
        if (parent_pid(int(started["pid"])) == frozen.proc.pid and started["run"] == latest.run
                and latest.kinds[-1] not in ("continue", "done")):
            return frozen, latest.run, paused_at
        os.killpg(frozen.proc.pid, signal.SIGCONT)
        assert time.monotonic() < deadline, f"{job_id}/{stage}: never stopped the worker while it ran the stage"


def parent_pid(pid: int) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after its ")"
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def worker_of(workers: list[WorkerProcess], pool_pid: int) -> WorkerProcess:
    """The worker whose pool process `pool_pid` is."""
    main = parent_pid(pool_pid)
    for w in workers:
        if w.proc is not None and w.proc.pid == main:
            return w
    raise AssertionError(f"process {pool_pid} (parent {main}) belongs to none of the workers")
