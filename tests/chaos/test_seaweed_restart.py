"""Chaos: the S3 server (SeaweedFS) stops in the middle of an upload and comes back.

A server of the test's own (the session's stays untouched) is stopped, by SIGTERM or SIGKILL, at a seeded
point of a deploy's upload stage, stays down a seeded while, and is started again on the same ports and
data. The upload retries and completes from its cursor. All along, a reader on another thread polls the
project's `latest.json`: every revision it ever points at must be complete — every object of that revision's
manifest present with the manifest's hash, none written after the pointer.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from pipeline.models import JobStatus, StageStatus
from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore, JobView
from pipeline.targets.bucket_layout import object_keys
from tests.chaos.conftest import Chaos
from tests.conftest import DEMO_REPO, ApiServer, Workers, wait_job
from tests.e2e.s3_bucket import s3_settings
from tests.fakes.seaweed import SeaweedProcess, _client

PROJECT = "chaos-s3"
LATEST = f"projects/{PROJECT}/latest.json"


@pytest.fixture
def weed() -> Iterator[SeaweedProcess]:
    server = SeaweedProcess(bucket="chaos-restart")
    try:
        server.start()
        yield server
    finally:
        server.close()


def incomplete(s3: Any, bucket: str, rev: str, live_since: Any) -> list[str]:
    """What of revision `rev` is missing, wrong, or newer than the pointer that made it live."""
    manifest_key = f"projects/{PROJECT}/{rev}/manifest.json"
    try:
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return [f"{manifest_key}: missing"]
        raise
    problems = []
    keys = {manifest_key: None, f"projects/{PROJECT}/{rev}/files-dist.json": None}
    for rel, sha in manifest["files"].items():
        for key in object_keys(rel, PROJECT, rev):
            keys[key] = sha
    for key, sha in keys.items():
        try:
            obj = s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                problems.append(f"{key}: missing")
                continue
            raise
        data = obj["Body"].read()
        if sha is not None and hashlib.sha256(data).hexdigest() != sha:
            problems.append(f"{key}: hash differs from the manifest's")
        if obj["LastModified"] > live_since:
            problems.append(f"{key}: written after latest.json pointed at {rev}")
    return problems


@dataclass
class PointerWatch:
    """Reads latest.json over and over from its own thread and checks every revision it points at."""

    s3: Any
    bucket: str
    seen: dict[str, list[str]] = field(default_factory=dict)  # rev -> its problems (empty: complete)
    reads: int = 0
    down_reads: int = 0  # reads that found no server
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> PointerWatch:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                obj = self.s3.get_object(Bucket=self.bucket, Key=LATEST)
                rev = str(json.loads(obj["Body"].read())["rev"])
                self.reads += 1
                if rev not in self.seen:
                    self.seen[rev] = incomplete(self.s3, self.bucket, rev, obj["LastModified"])
            except BotoCoreError:
                self.down_reads += 1  # the server is down: read again
            except ClientError:
                pass  # no pointer yet
            self._stop.wait(0.02)


def deploy(api: ApiServer, job_id: str, repo: Path) -> None:
    r = api.client.post("/jobs", json={"task": "deploy-repo", "source": str(repo), "job_id": job_id,
                                       "project_id": PROJECT, "options": {"skipEmbeddings": True}})
    assert r.status_code == 202, r.text


def test_seaweedfs_stopped_mid_upload_restarts_and_latest_never_points_at_a_partial_revision(
        settings: Settings, workers: Workers, store: JobStore, tmp_path: Path, weed: SeaweedProcess,
        chaos: Chaos, api_factory: Callable[[Settings], ApiServer]) -> None:
    rng = chaos.rng
    rec = chaos.record("S3 server stopped mid-upload")
    server = weed.server
    # one file a step, so the seeded moment falls between checkpoints of a long upload
    settings = s3_settings(settings, server).with_(upload_batch=1, s3_max_concurrency=2)
    workers.start(settings)
    api = api_factory(settings)
    repo = tmp_path / "repo"
    shutil.copytree(DEMO_REPO, repo)
    reader = _client(server.endpoint, server.access_key, server.secret_key)

    with PointerWatch(reader, server.bucket) as watch:
        deploy(api, "rev-0", repo)
        first = wait_job(store, "rev-0", timeout=120)
        assert first.status == JobStatus.COMPLETED, first.error

        for n in range(1, chaos.n(1, 5) + 1):
            job_id = f"rev-{n}"
            for post in repo.rglob("*.md"):  # every post changes: its shared object and the revision's files
                post.write_text(post.read_text() + f"\n\nEdited for {job_id}.\n")
            deploy(api, job_id, repo)
            share = rng.uniform(0.05, 0.75)
            kill = rng.random() < 0.5
            down_s = rng.uniform(0.3, 3.0)

            def mid_upload(job: JobView, job_id: str = job_id, share: float = share) -> bool:
                up = store.stage(job_id, "upload")
                return job.status.terminal or (up.status == StageStatus.RUNNING and up.total > 0
                                               and up.done >= max(1, share * up.total))

            job = wait_job(store, job_id, timeout=120, until=mid_upload)
            assert not job.status.terminal, f"{job_id} ended before the upload could be interrupted: {job.error}"
            weed.stop(kill=kill)
            at_stop = store.stage(job_id, "upload")
            assert at_stop.status != StageStatus.DONE, "the upload finished before the server stopped"
            stopped_cursor = at_stop.cursor or {"next": 0}
            time.sleep(down_s)
            weed.start()
            back = time.time()
            job = wait_job(store, job_id, timeout=180)
            outlasted = job.status == JobStatus.FAILED
            if outlasted:
                # The outage outlasted the stage's retries (their jittered backoff can be short): the job failed
                # naming the stage and S3, and no secret; a retry now that the server is back resumes it.
                error = job.error or {}
                assert error.get("stage") == "upload" and "S3" in error.get("message", ""), error
                assert server.secret_key not in json.dumps(error)
                r = api.client.post(f"/jobs/{job_id}/retry")
                assert r.status_code == 202, r.text
                job = wait_job(store, job_id, timeout=180)
            assert job.status == JobStatus.COMPLETED, job.error
            up = job.stage("upload")
            assert up.summary["latest"] is True and up.summary["rev"] == job_id
            # The files in flight are retried one by one first; a longer outage makes the stage retry, and
            # then it goes on from its checkpoint, not from the first file.
            retried = [ev for _id, ev in store.events(job_id) if ev["type"] == "retry" and ev.get("stage") == "upload"]
            resumed = up.resumed_from or stopped_cursor
            assert int(resumed["next"]) >= int(stopped_cursor["next"]), (resumed, stopped_cursor)
            rec.injected += 1
            rec.jobs_submitted += 1
            rec.jobs_completed += 1
            rec.recomputed.append(max(0, int(stopped_cursor["next"]) - int(resumed["next"])))
            after = [float(ev["ts"]) for _id, ev in store.events(job_id)
                     if ev["type"] in ("progress", "done") and ev.get("stage") == "upload" and float(ev["ts"]) > back]
            if after:
                rec.resume_s.append(round(min(after) - back, 3))
            rec.notes.append(f"{job_id}: {'SIGKILL' if kill else 'SIGTERM'} at {stopped_cursor['next']}/{up.total} "
                             f"files, down {down_s:.1f}s, {len(retried)} retries"
                             + (", outlasted them: failed, then POST retry" if outlasted else ""))
            # the reader must see this revision before the next one replaces it
            deadline = time.monotonic() + 10
            while job_id not in watch.seen and time.monotonic() < deadline:
                time.sleep(0.05)

    assert watch.down_reads > 0, "the reader never found the server down"
    revs = [f"rev-{n}" for n in range(chaos.n(1, 5) + 1)]
    assert set(watch.seen) == set(revs), watch.seen.keys()
    bad = {rev: problems for rev, problems in watch.seen.items() if problems}
    assert bad == {}, bad
    rec.notes.append(f"latest.json read {watch.reads} times ({watch.down_reads} found the server down); "
                     f"every revision it pointed at was complete")
