"""Every Prometheus metric repobuild exports, defined once, and the few functions the tasks call to move them.

Stages stay pure: they report what they did in `StageResult.counts` and the task layer turns that into metrics
here. Counters and histograms are incremented in whichever process does the work (a prefork pool process, a
gunicorn worker); with PROMETHEUS_MULTIPROC_DIR set, prometheus-client writes them to that folder and the
exporters (worker/metrics_server.py, api/routes/metrics.py) add up every process's files at scrape time.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from pipeline.models import StageState, WorkCounts

# From a second to an hour and more: a stage of a small job takes well under a second, embed_text of a big
# repository tens of minutes.
STAGE_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

JOBS_SUBMITTED = Counter("repobuild_jobs_submitted", "Jobs accepted, by task", ["task"])
JOBS_FINISHED = Counter("repobuild_jobs_finished", "Jobs that reached a final status, by task and status",
                        ["task", "status"])
STAGE_WALL = Histogram("repobuild_stage_wall_seconds",
                       "A stage's wall time from its first start to done, fanned-out batches included",
                       ["task", "stage"], buckets=STAGE_BUCKETS)
STAGE_TASK_TIME = Counter("repobuild_stage_task_seconds",
                          "Task time of finished stages: their own tasks and their batches", ["task", "stage"])
TASK_TIME = Histogram("repobuild_task_seconds", "The run time of one task: a stage's own (kind=stage) or a batch",
                      ["stage", "kind"], buckets=TASK_BUCKETS)
TASKS_RUNNING = Gauge("repobuild_tasks_running", "Tasks running now, by kind", ["kind"], multiprocess_mode="livesum")
BATCHES = Counter("repobuild_batches", "Fanned-out batches processed", ["stage"])
ITEMS = Counter("repobuild_items", "Items finished stages processed (posts, medias, inputs, images, files)", ["stage"])
CACHE_HITS = Counter("repobuild_cache_hits", "Items found done in a cache and not redone", ["cache"])
CACHE_MISSES = Counter("repobuild_cache_misses", "Items a cache did not hold, done for this job", ["cache"])
RETRIES = Counter("repobuild_retries", "Tasks retried after a transient error", ["stage", "kind"])
DEAD_LETTERS = Counter("repobuild_dead_letters", "Stages failed for good (dead-lettered)", ["stage"])
CALLBACK_FAILURES = Counter("repobuild_callback_failures", "Callbacks not delivered after all their retries")
REDRIVES = Counter("repobuild_reconciler_redrives", "Stages the reconciler sent again", ["stage", "reason"])
# The queue depth is no metric a process increments: api/routes/metrics.py reads it from Redis at scrape time.
QUEUE_DEPTH = "repobuild_queue_depth"


def stage_done(task: str, state: StageState, counts: WorkCounts) -> None:
    """A stage is done (once per stage of a job: a redelivered copy finds it done and does not come here)."""
    STAGE_WALL.labels(task, state.name).observe(state.wall_s())
    STAGE_TASK_TIME.labels(task, state.name).inc(state.task_s)
    if counts.items:
        ITEMS.labels(state.name).inc(counts.items)
    for cache, n in counts.cache_hits.items():
        CACHE_HITS.labels(cache).inc(n)
    for cache, n in counts.cache_misses.items():
        CACHE_MISSES.labels(cache).inc(n)


def job_finished(task: str, status: str) -> None:
    JOBS_FINISHED.labels(task, status).inc()
