"""The parse stage's posts as every later stage reads them: one at a time, in source path order.

Parse writes POST_LINES (JSON lines, a part per batch), so no stage holds a whole corpus's posts; a job parsed by an
earlier version has the whole list POSTS instead, which is read (whole) in its place.
"""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.catalog import POST_LINES, POSTS
from pipeline.models import JSON
from pipeline.stores.artifacts import ArtifactStore
from pipeline.stores.json_lines import has_lines, read_lines


def posts_parsed(store: ArtifactStore, job_id: str) -> bool:
    return has_lines(store, POST_LINES.key(job_id)) or store.exists(POSTS.key(job_id))


def iter_posts(store: ArtifactStore, job_id: str) -> Iterator[JSON]:
    """Every post entry; a PermanentError (the artifact is missing) when the job has parsed none."""
    if has_lines(store, POST_LINES.key(job_id)):
        yield from read_lines(store, POST_LINES.key(job_id))
        return
    posts: list[JSON] = store.get_json(POSTS.key(job_id))
    yield from posts
