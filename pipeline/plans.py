"""Task name → ordered stages. Declared once; the worker builds its Celery chains from this."""

from __future__ import annotations

from pipeline.errors import PermanentError, UnknownTask

NOTIFY = "notify"

# Stages that produce the bundle, in order. embed_images also makes the `_medias/` variants that post
# HTML links to, so every plan that publishes parsed posts runs it, with or without embeddings.
# `notify` always runs last and never fails a job.
BUILD = ("fetch", "parse", "embed_text", "embed_images", "build_db")
PLANS: dict[str, tuple[str, ...]] = {
    "process-all": (*BUILD, "enrich", "publish", NOTIFY),
    "build-assets": (*BUILD, "publish", NOTIFY),
    "process-with-repo": (*BUILD, "enrich", "publish", NOTIFY),
    "acquire-user-repo": ("fetch", NOTIFY),
    "build-database": ("build_db", NOTIFY),
}

# Task names of the original service that later issues wire in. They are known names, so they
# fail with a clear "not supported yet" instead of the original's "Unknown task type".
PLANNED: frozenset[str] = frozenset(
    {
        "enrich-data",
        "deploy-repo",
        "publish-r2",
        "publish-build-files",
        "wp-import",
        "generate-project-from-brief",
        "generate-and-deploy-project",
        "new-repo-from-template",
        "process-from-template",
    }
)

# Tasks whose stages start from a repository and therefore need a source.
NEEDS_SOURCE: frozenset[str] = frozenset({"process-all", "build-assets", "process-with-repo", "acquire-user-repo"})


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
