"""Chaos: kill -9 of the whole worker at seeded random moments of every stage and batch task, of every task
type that builds; a new worker is started after a random delay, and every job must come out as if nothing
had happened.

For each kill, checked from outcomes: the job completes; its bundle equals an uninterrupted reference run's
of the same task and input (benchmarks/bundle_diff.py); content.sqlite holds no duplicate row; no object
key of the bucket (versioned, so every upload is kept) and no local revision folder ever held two different
contents; the work done again is at most one batch of the stage killed (from cursors, attempts and batch
runs); and how long the job took to move again, from the kill and from the new worker's start.

The workers run one pool process, so what a kill interrupts is exactly one unit of work: one stage step or
one batch (with N processes it would be up to N batches in flight).
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api.cli.local_services import WorkerProcess
from benchmarks.bundle_diff import diff
from benchmarks.guide_corpus import english_corpus
from pipeline.http.callbacks import DELIVERY_HEADER
from pipeline.models import JobStatus
from pipeline.plans import PLANS
from pipeline.settings import Settings
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.jobs import JobStore
from pipeline.targets.bucket_layout import project_prefix
from tests.chaos.conftest import Chaos
from tests.chaos.kill_moments import Snapshot, moments_of, redone, snapshot, wait_for, wait_progress
from tests.chaos.outcomes import (
    RevisionSnapshots,
    download_revision,
    enable_versioning,
    object_versions,
    objects_with_two_contents,
    sqlite_duplicates,
    uploads_repeated,
)
from tests.chaos.report import percentile
from tests.conftest import DEMO_REPO, ApiServer, CallbackServer, Workers, wait_job
from tests.e2e.s3_bucket import client_of, s3_settings
from tests.fakes.gitserver import make_git_repo

BUCKET = "chaos-worker-kills"
# A fresh git checkout stamps its files with the checkout's time, so for a git source the post fields and
# content.sqlite columns made of file times are timestamps too, and so are the manifest's file hashes.
CHECKOUT_TIMES = frozenset({"fsCreated", "fsModified", "_created", "_modified", "files"})
TASKS = ("process-all", "build-assets", "process-with-repo", "deploy-repo")
GUIDE_ARTICLES = 6
LONG = frozenset({"parse", "embed_text", "embed_images", "upload", "embed_text:batch", "embed_images:batch"})


@dataclass(frozen=True)
class Case:
    task: str
    source: str
    git: bool

    @property
    def to_bucket(self) -> bool:
        return self.task == "deploy-repo"


def corpus(tmp_path: Path, full: bool) -> Path:
    """CI: the demo repository. Full: six English articles of opensource-guide and the images they show,
    ~100 passages to embed and two batches of images, so every stage lasts long enough to be hit."""
    root = tmp_path / "corpus"
    if not full:
        shutil.copytree(DEMO_REPO, root)
        return root
    return english_corpus(root, articles=GUIDE_ARTICLES)[0]


def git_repo(folder: Path, dest: Path) -> Path:
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    make_git_repo(dest, files, "chaos corpus")
    return dest


@dataclass
class Kill:
    at: Snapshot  # the job's state at the kill
    hit: str  # the moment it landed in (a stage, a stage's batches, or "over")
    running: bool  # whether work was running then, rather than waiting in the broker


class Run:
    """The services of the test (one worker at a time, killed and replaced; the API; a callback receiver),
    and what it saw, in `rec` and `problems`."""

    def __init__(self, chaos: Chaos, base: Settings, store: JobStore, workers: Workers, api: ApiServer,
                 callbacks: CallbackServer, tmp_path: Path, s3: Any) -> None:
        self.chaos, self.rng, self.base, self.store = chaos, chaos.rng, base, store
        self.workers, self.api, self.callbacks, self.tmp, self.s3 = workers, api, callbacks, tmp_path, s3
        self.rec = chaos.record("worker kill -9")
        self.problems: list[str] = []
        self.covered: Counter[str] = Counter()
        self.from_start: list[float] = []
        self.references: dict[str, Path] = {}

    def settings_for(self, job_id: str) -> Settings:
        # Each job gets an artifact store of its own: the vector and image caches are shared by the jobs of
        # one store, and a job finding everything cached would have no batches to kill.
        return self.base.with_(artifacts=str(self.tmp / "artifacts" / job_id))

    def start_worker(self, settings: Settings) -> WorkerProcess:
        return self.workers.start(settings, concurrency=1)

    def submit(self, case: Case, job_id: str) -> None:
        body: dict[str, Any] = {"task": case.task, "source": case.source, "job_id": job_id,
                                "callback_url": self.callbacks.url}
        if case.to_bucket:
            body |= {"project_id": f"p-{job_id}", "org_id": "org-chaos"}
        r = self.api.client.post("/jobs", json=body)
        assert r.status_code == 202, r.text

    def bundle(self, case: Case, job_id: str, settings: Settings) -> Path:
        """The job's published bundle: its revision folder, or the revision read back from the bucket."""
        if not case.to_bucket:
            return Path(settings.output) / job_id
        return download_revision(self.s3, BUCKET, project_prefix(f"p-{job_id}"), job_id, self.tmp / "bucket" / job_id)

    def reference(self, case: Case) -> Path:
        """The uninterrupted run of this (task, input), built on first use, on one artifact store."""
        if case.task not in self.references:
            settings = self.base.with_(artifacts=str(self.tmp / "artifacts" / "references"))
            worker = self.start_worker(settings)
            job_id = f"ref-{case.task}"
            self.submit(case, job_id)
            job = wait_job(self.store, job_id, timeout=600)
            worker.stop()
            assert job.status == JobStatus.COMPLETED, job.error
            self.references[case.task] = self.bundle(case, job_id, settings)
        return self.references[case.task]

    def choose(self, plan: tuple[str, ...], k: int) -> list[str]:
        """The k moments of the plan least hit so far, ties broken by the seed; in plan order."""
        moments = moments_of(plan)
        chosen = sorted(moments, key=lambda m: (self.covered[m], self.rng.random()))[:k]
        return sorted(chosen, key=moments.index)

    def kill_through(self, case: Case, job_id: str, moments: list[str], settings: Settings,
                     revisions: RevisionSnapshots) -> list[Kill] | None:
        """Run the job, killing its worker at each moment; a new worker comes up after a random delay.
        The kills, or None when the job did not complete."""
        store, rec, rng = self.store, self.rec, self.rng
        worker = self.start_worker(settings)
        self.submit(case, job_id)
        rec.jobs_submitted += 1
        kills: list[Kill] = []
        for moment in moments:
            if not wait_for(store, job_id, moment) and snapshot(store, job_id).in_progress()[0] == "over":
                rec.notes.append(f"{job_id}: aimed at {moment}, the job was over first; not killed")
                break
            # somewhere inside it: most stages last tens of milliseconds, batches and stepped stages seconds
            time.sleep(rng.uniform(0, 0.3 if moment in LONG else 0.01))
            worker.kill9()
            killed = time.monotonic()
            at = snapshot(store, job_id)
            kill = Kill(at, *at.in_progress())
            if kill.hit == "over":  # the build finished as the signal flew: no fault in this job
                rec.notes.append(f"{job_id}: aimed at {moment}, killed once the build was over; not counted")
                worker = self.start_worker(settings)
                break
            rec.injected += 1
            self.covered[kill.hit] += 1
            kills.append(kill)
            rec.notes.append(f"{job_id}: aimed at {moment}, killed in {kill.hit}{' (running)' if kill.running else ''}")
            if not case.to_bucket:
                revisions.take(Path(settings.output) / job_id)
            time.sleep(rng.uniform(0, 1.5))  # the new worker comes up a little later
            worker = self.start_worker(settings)
            up = time.monotonic()
            moved = wait_progress(store, job_id, kill.at)
            rec.resume_s.append(round(moved - killed, 2))
            self.from_start.append(moved - up)
        job = wait_job(store, job_id, timeout=600)
        worker.stop()
        if job.status != JobStatus.COMPLETED:
            self.problems.append(f"{job_id}: {job.status.value}: {job.error}")
            return None
        rec.jobs_completed += 1
        return kills

    def check_redone(self, job_id: str, kills: list[Kill], settings: Settings) -> None:
        final = snapshot(self.store, job_id)
        artifacts = LocalArtifactStore(settings.artifacts)
        sizes = {"parse": settings.parse_batch, "upload": settings.upload_batch}
        for n, kill in enumerate(kills):
            after = kills[n + 1].at if n + 1 < len(kills) else final
            cost = redone(kill.at, after, kill.hit, kill.running, artifacts, job_id, sizes)
            self.rec.recomputed.append(cost.items)
            self.problems.extend(f"{job_id} kill {n} ({kill.hit}): {p}" for p in cost.problems)
            if cost.items > cost.bound:
                self.problems.append(f"{job_id} kill {n} ({kill.hit}): {cost.items} items redone, more than a "
                                     f"batch ({cost.bound})")

    def check_outcome(self, case: Case, job_id: str, settings: Settings, revisions: RevisionSnapshots) -> None:
        rec = self.rec
        bundle = self.bundle(case, job_id, settings)
        ignore = CHECKOUT_TIMES if case.git else frozenset()
        self.problems.extend(f"{job_id} vs its reference: {p}" for p in diff(self.reference(case), bundle, ignore))
        db = bundle / "content.sqlite"
        dups = sqlite_duplicates(db) if db.is_file() else [f"{job_id}: no content.sqlite"]
        rec.duplicate_rows += len(dups)
        self.problems.extend(f"{job_id}: {p}" for p in dups)
        if case.to_bucket:
            prefix = project_prefix(f"p-{job_id}")
            versions = object_versions(self.s3, BUCKET, prefix + "/")
            rewritten = objects_with_two_contents(versions, frozenset({f"{prefix}/latest.json"}))
            rec.notes.append(f"{job_id}: {uploads_repeated(versions)} object(s) uploaded again with the same content")
        else:
            rewritten = revisions.rewritten_differently(bundle, ignore)
            if revisions.taken:
                rec.notes.append(f"{job_id}: revision folder on disk at {len(revisions.taken)} kill(s), compared")
        rec.duplicate_objects += len(rewritten)
        self.problems.extend(f"{job_id}: {p}" for p in rewritten)
        deliveries = [r for r in self.callbacks.accepted if json.loads(r["body"]).get("jobId") == job_id]
        if not deliveries:
            self.problems.append(f"{job_id}: no callback delivered")
        # At least once: a kill between the POST and notify's checkpoint sends it again, the same bytes under
        # the same delivery id, so the receiver can drop the repeat.
        rec.duplicate_deliveries += max(0, len(deliveries) - 1)
        sent = {(r["body"], {k.lower(): v for k, v in r["headers"].items()}.get(DELIVERY_HEADER.lower()))
                for r in deliveries}
        if len(sent) > 1:
            self.problems.append(f"{job_id}: {len(deliveries)} callbacks with {len(sent)} different bodies or ids")


def test_kill9_whole_worker_at_random_moments(chaos: Chaos, settings: Settings, workers: Workers, store: JobStore,
                                              tmp_path: Path, s3_server: Any,
                                              api_factory: Callable[[Settings], ApiServer],
                                              callback_server: Callable[..., CallbackServer]) -> None:
    s3 = client_of(s3_server)
    enable_versioning(s3, BUCKET)
    base = s3_settings(settings, s3_server).with_(
        s3_bucket=BUCKET, task_budget_s=1.0, parse_batch=chaos.n(2, 3), embed_batch=chaos.n(4, 8),
        upload_batch=chaos.n(8, 12))
    run = Run(chaos, base, store, workers, api_factory(base), callback_server(), tmp_path, s3)
    rec = run.rec
    folder = corpus(tmp_path, chaos.full)
    repo = git_repo(folder, tmp_path / "corpus-git")
    cases = {t: Case(t, f"file://{repo}" if t == "process-with-repo" else str(folder), t == "process-with-repo")
             for t in TASKS}

    # Full: every task type in turn, each round in a seeded order. CI: a deploy (S3), and a local task only if
    # the deploy job missed too many of its moments.
    # A moment can be missed when the job gets past it first, so more are aimed at than needed, and a job
    # more is run (up to a few) while the kills are still short of the minimum.
    jobs, kills_per_job, minimum = chaos.n(1, 18), 3, chaos.n(2, 50)
    order = list(TASKS) if chaos.full else ["deploy-repo", chaos.rng.choice(TASKS[:-1])]
    started = time.monotonic()
    j = 0
    while j < jobs or (rec.injected < minimum and j < jobs + 3):
        if j % len(order) == 0 and chaos.full:
            chaos.rng.shuffle(order)
        case = cases[order[j % len(order)]]
        run.reference(case)
        job_id = f"kill-{j:02d}-{case.task}"
        settings_j = run.settings_for(job_id)
        revisions = RevisionSnapshots(tmp_path / "snapshots" / job_id)
        kills = run.kill_through(case, job_id, run.choose(PLANS[case.task], kills_per_job), settings_j, revisions)
        if kills is not None:
            run.check_redone(job_id, kills, settings_j)
            run.check_outcome(case, job_id, settings_j, revisions)
        j += 1

    rec.notes.append(f"kills by moment: {dict(sorted(run.covered.items()))}")
    rec.notes.append(f"{rec.injected} kills over {j} jobs in {time.monotonic() - started:.0f}s")
    if run.from_start:
        rec.notes.append(f"resume from the new worker's start: median {statistics.median(run.from_start):.2f}s, "
                         f"p95 {percentile(run.from_start, 95):.2f}s, max {max(run.from_start):.2f}s")
    print("\n" + "\n".join(rec.notes + [f"PROBLEM {p}" for p in run.problems]))
    assert run.problems == []
    assert rec.injected >= minimum
    assert rec.jobs_completed == rec.jobs_submitted
    if chaos.full:
        every = {m for t in TASKS for m in moments_of(PLANS[t])}
        assert every <= set(run.covered), f"never killed in: {sorted(every - set(run.covered))}"


pytestmark = pytest.mark.e2e
