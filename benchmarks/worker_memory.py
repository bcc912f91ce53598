"""Peak memory of a worker per queue, for the resource requests and limits of k8s/.

Runs the deployment's own worker commands (`repobuild worker -Q <queue> --concurrency N`, one worker per queue as
in k8s/worker-*.yaml) on a private Redis, submits one process-all job with embeddings on the English posts of
opensource-guide, and samples every process of each worker (the main process and its pool children) from /proc
every 100 ms. It prints, per worker, the peak RSS of the main process, of the largest child, the peak of their sum,
and the peak of their summed PSS (shared copy-on-write pages counted once, close to what a cgroup charges).

    python -m benchmarks.worker_memory [--concurrency 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from api.cli.local_services import PrivateRedis
from benchmarks.guide_corpus import english_corpus
from pipeline.models import JobSpec, JobStatus, SourceSpec
from pipeline.plans import job_is_over
from pipeline.settings import Settings
from worker.factory import create_celery
from worker.queues import QUEUES
from worker.submission import submit

JOB_TIMEOUT_S = 3600.0


def _kib(pid: int, file: str, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass  # the process ended between listing and reading: it holds no memory any more
    return 0


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


@dataclass
class Peaks:
    main_rss: int = 0
    child_rss: int = 0
    sum_rss: int = 0
    sum_pss: int = 0
    children_seen: set[int] = field(default_factory=set)

    def sample(self, pid: int) -> None:
        kids = descendants(pid)
        self.children_seen.update(kids)
        main = _kib(pid, "status", "VmRSS")
        rss = [_kib(k, "status", "VmRSS") for k in kids]
        pss = _kib(pid, "smaps_rollup", "Pss") + sum(_kib(k, "smaps_rollup", "Pss") for k in kids)
        self.main_rss = max(self.main_rss, main)
        self.child_rss = max([self.child_rss, *rss])
        self.sum_rss = max(self.sum_rss, main + sum(rss))
        self.sum_pss = max(self.sum_pss, pss)


def start_workers(env: dict[str, str], concurrency: int, root: Path) -> dict[str, subprocess.Popen[bytes]]:
    """One worker per queue, with the command of k8s/worker-*.yaml."""
    procs = {}
    for q in QUEUES:
        with (root / f"worker-{q}.log").open("wb") as log:
            procs[q] = subprocess.Popen([sys.executable, "-m", "api.cli", "worker", "-Q", q,
                                         f"--concurrency={concurrency}", "-n", f"{q}-{uuid.uuid4().hex[:6]}@%h",
                                         "--loglevel=INFO"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
    return procs


def stop_workers(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for p in procs.values():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)  # warm shutdown
    for p in procs.values():
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def run_job(settings: Settings, corpus: Path, procs: dict[str, subprocess.Popen[bytes]], root: Path) -> float:
    app = create_celery(settings)
    spec = JobSpec(job_id=f"mem-{uuid.uuid4().hex[:8]}", task="process-all", source=SourceSpec(path=str(corpus)),
                   output=settings.output)
    started = time.monotonic()
    submit(app, spec)
    while not job_is_over(job := app.store.get(spec.job_id)):
        if time.monotonic() - started > JOB_TIMEOUT_S:
            raise SystemExit("job did not finish")
        for q, p in procs.items():
            if p.poll() is not None:
                raise SystemExit(f"the {q} worker exited; see {root}/worker-{q}.log")
        time.sleep(0.2)
    if job.status != JobStatus.COMPLETED:
        raise SystemExit(f"job {job.status.value}: {job.error}")
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="repobuild-memory-"))
    redis = PrivateRedis().start()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stop = threading.Event()
    peaks = {q: Peaks() for q in QUEUES}
    try:
        corpus, n_posts, n_images = english_corpus(root / "corpus")
        settings = Settings(redis_url=redis.url, artifacts=str(root / "artifacts"), output=str(root / "out"),
                            temp_dir=str(root), local_source_roots=(str(root),))
        procs = start_workers({**os.environ, **settings.to_env()}, args.concurrency, root)

        def sampler() -> None:
            while not stop.is_set():
                for q, p in procs.items():
                    peaks[q].sample(p.pid)
                time.sleep(0.1)

        threading.Thread(target=sampler, daemon=True).start()
        time.sleep(8)  # both workers up and idle: the idle peak is part of what is measured
        wall = run_job(settings, corpus, procs, root)
        stop.set()
        print(f"job: process-all with embeddings, {n_posts} posts, {n_images} images, {wall:.1f} s, "
              f"concurrency {args.concurrency} per worker")
        for q, pk in peaks.items():
            print(f"{q}: main RSS {pk.main_rss / 1024:.0f} MiB, largest child RSS {pk.child_rss / 1024:.0f} MiB, "
                  f"peak RSS sum {pk.sum_rss / 1024:.0f} MiB, peak PSS sum {pk.sum_pss / 1024:.0f} MiB "
                  f"({len(pk.children_seen)} child processes seen)")
        return 0
    finally:
        stop.set()
        stop_workers(procs)
        redis.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
