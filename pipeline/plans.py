"""Task name → ordered stages. Declared once; the worker builds its Celery chains from this."""

from __future__ import annotations

from pipeline.errors import PermanentError, UnknownTask

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


def build_stages(task: str) -> tuple[str, ...]:
    """The stages whose completion makes the job `completed` (everything but notify)."""
    return tuple(s for s in stages_for(task) if s != NOTIFY)
