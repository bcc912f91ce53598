"""Task name → ordered stages, and what that order means for a job. Declared once; the worker builds its
Celery chains from the plans and asks the rules below when a stage may run and when a job is over."""

from __future__ import annotations

from pipeline.errors import PermanentError, UnknownTask
from pipeline.models import JSON, JobStatus, StageState, StageStatus
from pipeline.stores.jobs import JobView

NOTIFY = "notify"

# Stages that produce the bundle, in order. embed_images also makes the `_medias/` variants that post
# HTML links to, so every plan that publishes parsed posts runs it, with or without embeddings.
# `notify` always runs last and never fails a job. `source` makes a repository (WordPress import, a
# brief, a GitHub template) that `fetch` then takes; `upload` sends a bundle to S3 (CONTRACT §4), and
# `existing` lists what the bucket already holds, so a deploy redoes only what changed.
BUILD = ("fetch", "parse", "embed_text", "embed_images", "build_db")
PROCESS = (*BUILD, "enrich", "publish")
# Deploys look at what the project's bucket holds before building (the original's fetch-existing).
DEPLOY = ("fetch", "existing", *BUILD[1:], "enrich", "publish", "upload")
PLANS: dict[str, tuple[str, ...]] = {
    "process-all": (*PROCESS, NOTIFY),
    "build-assets": (*BUILD, "publish", NOTIFY),
    "process-with-repo": (*PROCESS, NOTIFY),
    "acquire-user-repo": ("fetch", NOTIFY),
    "build-database": ("build_db", NOTIFY),
    "enrich-data": ("enrich", NOTIFY),
    "deploy-repo": (*DEPLOY, NOTIFY),
    "publish-r2": ("upload", NOTIFY),
    "publish-build-files": ("upload", NOTIFY),
    "wp-import": ("source", *DEPLOY, NOTIFY),
    "generate-project-from-brief": ("source", NOTIFY),
    "generate-and-deploy-project": ("source", *DEPLOY, NOTIFY),
    "new-repo-from-template": ("source", "fetch", NOTIFY),
    "process-from-template": ("source", *PROCESS, NOTIFY),
    # `repobuild run export.xml` and `repobuild run brief.txt --task …`: made, built and written to a local folder,
    # with no bucket and no project (the contract's tasks above deploy to one).
    "wp-import-local": ("source", *PROCESS, NOTIFY),
    "generate-project-local": ("source", *PROCESS, NOTIFY),
}

# Task names known but not runnable here: they fail with a clear "not supported" message instead of
# the original's "Unknown task type".
PLANNED: frozenset[str] = frozenset()

# Tasks whose first stage clones or copies a repository, and therefore need a source.
NEEDS_SOURCE: frozenset[str] = frozenset({"process-all", "build-assets", "process-with-repo", "acquire-user-repo",
                                          "deploy-repo"})
# Tasks that publish to a project's place in the bucket.
NEEDS_PROJECT: frozenset[str] = frozenset(t for t, stages in PLANS.items() if "upload" in stages)


def publishes_to_bucket(task: str) -> bool:
    return task in NEEDS_PROJECT


def stages_for(task: str) -> tuple[str, ...]:
    try:
        return PLANS[task]
    except KeyError:
        if task in PLANNED:
            raise PermanentError(f"Task type {task} is not supported by this version of repobuild yet") from None
        raise UnknownTask(task) from None


# ------------------------------------------------------------------------------------------------ a job's life
# Every plan builds, then notifies: the job is `completed` when its last build stage is done; notify then
# reports the outcome (completed, failed or cancelled), and its own failure never changes that outcome.


def build_finished(job: JobView) -> bool:
    """Every stage but notify is done: the bundle exists, the job is `completed`."""
    return all(s.status == StageStatus.DONE for s in job.stages if s.name != NOTIFY)


def job_is_over(job: JobView) -> bool:
    """Nothing is left to run or to report: the outcome is known and notify delivered it, had nothing to
    deliver or gave up (or the plan has no notify)."""
    return job.status.terminal and all(s.status in (StageStatus.DONE, StageStatus.FAILED)
                                       for s in job.stages if s.name == NOTIFY)


def may_run(job: JobView, stage: str) -> bool:
    """Whether a message for `stage` is to be run now, rather than dropped."""
    if stage == NOTIFY:
        # It reports the outcome, so it runs for every outcome, but only once the outcome is known.
        return job.status in (JobStatus.FAILED, JobStatus.CANCELLED) or build_finished(job)
    # Otherwise it is a stale message from before the cancel or the dead-letter.
    return job.status not in (JobStatus.FAILED, JobStatus.CANCELLED)


def fails_job(stage: str) -> bool:
    """Whether a stage that failed for good fails its job: a failed callback never un-does a finished build."""
    return stage != NOTIFY


def stage_to_drive(job: JobView) -> StageState | None:
    """The stage the job waits on: its first not done while it runs, notify once its outcome is known."""
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        return job.next_stage()
    if any(s.name == NOTIFY for s in job.stages) and may_run(job, NOTIFY):
        return job.stage(NOTIFY)
    return None


def callback_record(job: JobView) -> JSON | None:
    """The job's `callback` field once notify is over: delivered, none (no callback URL) or failed."""
    if not any(s.name == NOTIFY for s in job.stages):
        return None
    notify = job.stage(NOTIFY)
    if notify.status == StageStatus.FAILED:
        return {"status": "failed", "error": notify.error, "attempts": notify.attempts}
    return {"status": "delivered" if notify.summary.get("delivered") else "none", **notify.summary}
