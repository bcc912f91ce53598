"""Where a project's files go in the bucket: the original's layout (CONTRACT §4).

    projects/{projectId}/_shared/medias/<f>       every `_medias/<f>` (content-addressed, shared by revisions)
    projects/{projectId}/_shared/posts/<h>.json   every `_posts/hash/<h>.json` (also kept in the revision)
    projects/{projectId}/{rev}/<path>             everything else (rev = the job id)
    projects/{projectId}/latest.json              {rev, seq, jobId, publishedAt}: written last
"""

from __future__ import annotations

from pipeline.errors import PermanentError


def project_prefix(project_id: str, root: str = "") -> str:
    """`[root/]projects/{projectId}`: a project's folder in the bucket (root: REPOBUILD_PUBLISH_TARGET's prefix)."""
    if not project_id or "/" in project_id or project_id in (".", ".."):
        raise PermanentError(f"projectId {project_id!r} cannot name a folder of the bucket")
    return f"{root}/projects/{project_id}" if root else f"projects/{project_id}"


def object_keys(rel: str, project_id: str, rev: str, as_is: bool = False, root: str = "") -> list[str]:
    """Where one bundle file goes (CONTRACT §4). `as_is` (publish-build-files) keeps the folder's layout."""
    base = project_prefix(project_id, root)
    if as_is:
        return [f"{base}/{rev}/{rel}"]
    if rel.startswith("_medias/"):
        return [f"{base}/_shared/medias/{rel.removeprefix('_medias/')}"]
    if rel.startswith("_posts/hash/") and rel != "_posts/hash/index.json":
        return [f"{base}/{rev}/{rel}", f"{base}/_shared/posts/{rel.removeprefix('_posts/hash/')}"]
    return [f"{base}/{rev}/{rel}"]
