"""Many small jobs at once on four worker processes, whole workers killed with -9 and replaced mid-run.

Every job completes, every stage of every job is marked done exactly once, every bundle is complete and equal
to the others (the same repository), and the load the pipeline puts on Redis stays bounded: the commands per
second while idle with all the jobs completed are compared with those while idle before any job, and during
the run; a reconciler that read every job it ever saw on each tick would show up as job reads while idle.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import redis

from api.cli.local_services import WorkerProcess
from benchmarks.bundle_diff import diff
from pipeline.models import JobSpec, JobStatus, SourceSpec, StageStatus
from pipeline.plans import job_is_over
from pipeline.settings import Settings
from pipeline.stores.jobs_redis import RedisJobStore
from tests.chaos.conftest import Chaos
from tests.chaos.progress import progress_since
from tests.conftest import DEMO_REPO, Workers, wait_job
from worker.repobuild_app import RepobuildCelery
from worker.submission import submit

PARSE_ONLY = {"skipEmbeddings": True}
IDLE_WINDOW_S = 5.0


def command_counts(client: redis.Redis) -> Counter[str]:
    """Calls per command so far (INFO commandstats), and the total under "*"."""
    stats = client.info("commandstats")
    counts = Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})
    counts["*"] = int(client.info("stats")["total_commands_processed"])
    return counts


def rate(client: redis.Redis, seconds: float) -> tuple[float, Counter[str]]:
    """Commands per second over the next `seconds`, and the calls per command in that time."""
    before, t0 = command_counts(client), time.monotonic()
    time.sleep(seconds)
    after, elapsed = command_counts(client), time.monotonic() - t0
    delta = after - before
    delta["info"] = 0  # our own two INFO calls
    return (delta["*"] - 2) / elapsed, delta


def test_many_jobs_with_workers_killed(chaos: Chaos, settings: Settings, workers: Workers, store: RedisJobStore,
                                       celery_app: RepobuildCelery) -> None:
    rec = chaos.record("many jobs, worker kill -9")
    # a 5 s budget: a killed worker's held message counts as lost after 15 s, not after the default's 70 s
    settings = settings.with_(task_budget_s=5.0)
    n_jobs, kills = chaos.n(16, 200), chaos.n(1, 3)
    client = redis.Redis.from_url(settings.redis_url or "")
    running = [workers.start(settings, concurrency=2) for _ in range(2)]  # 4 worker processes
    idle_before, _ = rate(client, IDLE_WINDOW_S)

    ids = [f"many-{chaos.rng.getrandbits(40):010x}-{n:03d}" for n in range(n_jobs)]
    t0 = time.monotonic()
    counts_at_start = command_counts(client)
    for job_id in ids:
        submit(celery_app, JobSpec(job_id=job_id, task="process-all", source=SourceSpec(path=str(DEMO_REPO)),
                                   options=PARSE_ONLY, output=settings.output))
    rec.jobs_submitted += n_jobs
    kill_after = sorted(chaos.rng.sample(range(0, n_jobs // 4), kills))  # after this many jobs are over
    for threshold in kill_after:
        deadline = time.monotonic() + 300
        # one ZCARD a poll: the test's own reads must not be what the Redis load measures
        while n_jobs - int(client.zcard(store.keys.active)) < threshold:
            assert time.monotonic() < deadline, f"fewer than {threshold} jobs over in 300s"
            time.sleep(0.2)
        in_flight: list[str] = []
        while not in_flight:  # the kill must catch stages running
            active = store.active_ids()
            assert active and time.monotonic() < deadline, "every job finished before the kill: nothing was tested"
            in_flight = [j for j in active if any(s.status == StageStatus.RUNNING for s in store.get(j).stages)]
            time.sleep(0.02)
        victim = running.pop(chaos.rng.randrange(len(running)))
        victim.kill9()
        killed_at = time.time()
        rec.injected += 1
        running.append(_replacement(workers, settings))
        rec.notes.append(f"kill -9 of a whole worker after {threshold} jobs, {len(in_flight)} stages running")
        rec.resume_s.append(round(_all_progressed(store, in_flight, killed_at), 2))

    for job_id in ids:
        job = wait_job(store, job_id, timeout=300)
        assert job.status == JobStatus.COMPLETED, (job_id, job.error)
    run_s = time.monotonic() - t0
    during = command_counts(client) - counts_at_start
    idle_after, idle_calls = rate(client, IDLE_WINDOW_S)

    redone = 0
    for job_id in ids:
        job = store.get(job_id)
        done = Counter(ev.get("stage") for _id, ev in store.events(job_id) if ev.get("type") == "done")
        # never twice; a kill between a stage's done mark and its "done" event can leave the event out (the stage
        # is done and not redone: its status says so below)
        assert all(done[s.name] <= 1 for s in job.stages), (job_id, done)
        assert all(s.status == StageStatus.DONE for s in job.stages), job_id
        redone += sum(s.attempts - 1 for s in job.stages)
        rec.duplicate_deliveries += sum(1 for _id, ev in store.events(job_id) if ev.get("type") == "duplicate")
        rec.jobs_completed += 1
    rec.recomputed.append(redone)

    out = Path(settings.output)
    bundles = sorted(p for p in out.iterdir() if p.is_dir() and not p.is_symlink())  # `latest` points at one
    assert [p.name for p in bundles] == sorted(ids)  # one bundle per job, none twice, none missing
    for job_id in ids[1:]:
        assert diff(out / ids[0], out / job_id) == [], job_id

    # A reconciler reading every job it ever saw would read N job hashes per tick while idle.
    assert idle_calls["hgetall"] < n_jobs, idle_calls.most_common(8)
    top = ", ".join(f"{k} {v / run_s:.0f}" for k, v in (during - Counter({"*": during["*"]})).most_common(6))
    idle_top = ", ".join(f"{k} {v / IDLE_WINDOW_S:.1f}" for k, v in idle_calls.most_common(6) if k != "*")
    rec.notes.append(f"{n_jobs} jobs on 4 processes in {run_s:.1f}s; Redis commands/s: idle before "
                     f"{idle_before:.1f}, during the run {during['*'] / run_s:.0f} ({top}), idle after "
                     f"{idle_after:.1f} ({idle_top}); stage attempts beyond one: {redone}")


def _replacement(workers: Workers, settings: Settings) -> WorkerProcess:
    """A new worker, started without waiting for it to be ready, so the next kill can come while it boots (jobs this
    small are over within seconds); the fixture stops it with the others."""
    n = len(workers.started)
    w = WorkerProcess(settings.to_env(), concurrency=2, log_path=str(workers.tmp_path / f"worker-{n}.log"),
                      name=f"w{n}-{time.time_ns()}@%h")
    workers.started.append(w.start())
    return w


def _all_progressed(store: RedisJobStore, ids: list[str], since: float) -> float:
    """Seconds from `since` until every one of `ids` (the jobs running at the kill) made progress again: the
    slowest is a stage the dead worker held, re-driven once its lease expired. A job that finished between our
    look and the kill has nothing left to do and counts as progressed at once."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        seen = [since if job_is_over(store.get(j)) else progress_since(store, j, since) for j in ids]
        if all(t is not None for t in seen):
            return max(t for t in seen if t is not None) - since
        time.sleep(0.25)
    raise AssertionError(f"not all of {ids} made progress within 120s of the kill")
