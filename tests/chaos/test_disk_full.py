"""Chaos: the disk the artifact store and the output folder live on fills up under a running job.

The disk is a small tmpfs mounted for the test (we run as root in the sandbox; without the right to mount,
the test skips and says why). A reference run measures the job's footprint on it; each faulted run starts
cold on the same disk with a filler file leaving only a seeded fraction of that footprint free, so the job
runs out of space at a seeded point. ENOSPC is transient (space comes back): the stage retries, and either
space is freed while it does (the job completes by itself) or the retries run out (the job fails naming
ENOSPC and what could not be written, with no half-written file left behind) and `POST /jobs/<id>/retry`
after freeing resumes it. Either way the bundle equals the reference.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.bundle_diff import diff
from pipeline.models import JobStatus
from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore, JobView
from tests.chaos.conftest import Chaos
from tests.conftest import DEMO_REPO, ApiServer, Workers, wait_job
from tests.fakes.small_disk import small_disk

DISK_MB = 128
# The reference run's id; bundle_diff replaces each side's revision in every string, so it must be a word no
# post contains ("ref" is in every "href").
BASELINE = "baseline-run"
# what a message must name: ENOSPC, and the artifact, tree or revision it could not write
NAMED = re.compile(r"ENOSPC\) writing (artifact|artifact tree|revision) '[^']+'")


def used_bytes(root: Path) -> int:
    st = os.statvfs(root)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def fill(root: Path, leave: int) -> Path:
    """A file taking all the free space of `root`'s disk but `leave` bytes."""
    st = os.statvfs(root)
    filler = root / "filler"
    with filler.open("wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, max(1, st.f_bavail * st.f_frsize - leave))
    return filler


def clear(disk: Path) -> None:
    """Everything the jobs wrote, so the next run starts cold (no cached vector or image variant)."""
    for child in disk.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


# What the stores write before a rename: mkstemp's `.<name>-XXXXXXXX` files, staging and swapped-out folders.
TEMPORARY = re.compile(r"^\.(staging-|old-|latest-|download-|.+-[a-z0-9_]{8}$)")


def hidden_leftovers(disk: Path) -> list[str]:
    """Temporary files and staging folders still there: a failed write must leave none (a source's own
    dotfiles, `.repoignore`, are content)."""
    return sorted(p.relative_to(disk).as_posix() for p in disk.rglob(".*") if TEMPORARY.match(p.name))


def no_space_events(store: JobStore, job_id: str) -> list[dict[str, str]]:
    return [ev for _id, ev in store.events(job_id) if ev["type"] == "retry" and "ENOSPC" in ev.get("message", "")]


def progress_after(store: JobStore, job_id: str, when: float) -> float | None:
    """Seconds from `when` to the job's first sign of progress after it."""
    for _id, ev in store.events(job_id):
        if ev["type"] in ("started", "progress", "done", "completed") and float(ev["ts"]) > when:
            return float(ev["ts"]) - when
    return None


def test_disk_full_in_the_artifact_store_fails_clearly_and_resumes(
        settings: Settings, workers: Workers, store: JobStore, tmp_path: Path, chaos: Chaos,
        api_factory: Callable[[Settings], ApiServer]) -> None:
    rng = chaos.rng
    rec = chaos.record("disk full (ENOSPC)")
    with small_disk(tmp_path / "disk", DISK_MB) as disk:
        settings = settings.with_(artifacts=str(disk / "artifacts"), output=str(disk / "out"))
        workers.start(settings)
        api = api_factory(settings)

        def run(job_id: str) -> None:
            r = api.client.post("/jobs", json={"task": "process-all", "source": str(DEMO_REPO), "job_id": job_id})
            assert r.status_code == 202, r.text

        run(BASELINE)
        ref = wait_job(store, BASELINE, timeout=120)
        assert ref.status == JobStatus.COMPLETED, ref.error
        footprint = used_bytes(disk)
        reference = tmp_path / "reference"
        shutil.copytree(disk / "out" / BASELINE, reference / BASELINE, symlinks=True)

        # both ways out of a full disk, in a seeded order; more rounds at full scale
        modes = ["freed while retrying", "freed after failing"] * chaos.n(1, 4)
        rng.shuffle(modes)
        for n, mode in enumerate(modes):
            clear(disk)
            share = rng.uniform(0.05, 0.85)
            filler = fill(disk, int(footprint * share))
            job_id = f"full-{n}"
            run(job_id)
            if mode == "freed while retrying":
                def out_of_space(job: JobView, job_id: str = job_id) -> bool:
                    return bool(no_space_events(store, job_id)) or job.status.terminal

                job = wait_job(store, job_id, timeout=120, until=out_of_space)
                assert job.status == JobStatus.RUNNING, f"{job.status} before running out of space: {job.error}"
                filler.unlink()
                freed = time.time()
            else:
                job = wait_job(store, job_id, timeout=120)
                assert job.status == JobStatus.FAILED, f"{job.status}: the job never ran out of space"
                error = job.error or {}
                assert error.get("stage") and NAMED.search(error.get("message", "")), error
                assert hidden_leftovers(disk) == [], hidden_leftovers(disk)
                filler.unlink()
                freed = time.time()
                r = api.client.post(f"/jobs/{job_id}/retry")
                assert r.status_code == 202, r.text
            hit = no_space_events(store, job_id)
            assert hit and NAMED.search(hit[0]["message"]), hit
            job = wait_job(store, job_id, timeout=120)
            assert job.status == JobStatus.COMPLETED, job.error
            assert diff(reference / BASELINE, disk / "out" / job_id) == []
            rec.injected += 1
            rec.jobs_submitted += 1
            rec.jobs_completed += 1
            resumed = progress_after(store, job_id, freed)
            if resumed is not None:
                rec.resume_s.append(round(resumed, 3))
            rec.notes.append(f"{mode}: {share:.0%} of the footprint free; {hit[0].get('stage')}: {hit[0]['message']}")
