"""upload: a bundle → an S3-compatible bucket in the original's layout (CONTRACT §4), then the pointer.

    projects/{projectId}/_shared/medias/<f>       every `_medias/<f>` (content-addressed, shared by revisions)
    projects/{projectId}/_shared/posts/<h>.json   every `_posts/hash/<h>.json` (also kept in the revision)
    projects/{projectId}/{rev}/<path>             everything else (rev = the job id)
    projects/{projectId}/latest.json              {rev, seq, jobId, publishedAt}: written last

Objects already stored with the same content hash are skipped, so a retried or resumed upload sends
only what is missing, and the cursor (files done so far) keeps a task inside its time budget. The
pointer moves only to a later submission of the same project (`seq`), so a slow older job can never
replace a newer revision. A bundle identical to the current latest revision is not uploaded again at
all: the pointer stays where it is and every file counts as skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.catalog import BUNDLE, FAILED_UPLOAD
from pipeline.errors import PermanentError, TransientError
from pipeline.models import JSON, StageResult
from pipeline.sources.dist_folder import dist_folder
from pipeline.stages.context import StageContext
from pipeline.targets.bucket_layout import object_keys, project_prefix
from pipeline.targets.s3 import FailedUpload, S3Publisher, UploadReport
from pipeline.targets.s3_pointer import move_pointer
from pipeline.timestamps import now_iso

# Fields of manifest.json that differ between two builds of the same content.
VOLATILE = ("revision", "jobId", "createdAt")


def _bundle_root(ctx: StageContext) -> tuple[Path, bool]:
    """(folder to upload, as_is). A dist folder named in the request, else the bundle publish made."""
    as_is = ctx.spec.task == "publish-build-files"
    if ctx.spec.task in ("publish-r2", "publish-build-files"):
        folder = dist_folder(ctx.spec.options, ctx.settings.local_source_roots)
        if not folder:
            raise PermanentError(f"{ctx.spec.task} needs data.assets.distFolder or data.repoInfo.distPath")
        return folder, as_is
    return ctx.artifacts.tree(BUNDLE.key(ctx.job_id)), as_is


def _files(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            continue  # a link in a dist folder must not publish a file of the machine that built it
        if path.is_file():
            out.append(path.relative_to(root).as_posix())
    return out


def _stable_manifest(data: Any) -> Any:
    """What two builds of the same content share. `_medias/` names are content-addressed and their
    sizes are in medias.json (compared); a build on a cold cache lists them without holding them."""
    if not isinstance(data, dict):
        return data
    files = {k: v for k, v in (data.get("files") or {}).items() if not k.startswith("_medias/")}
    return {**{k: v for k, v in data.items() if k not in VOLATILE}, "files": files}


def _unchanged_revision(pub: S3Publisher, base: str, root: Path) -> str | None:
    """The latest revision when it holds exactly this bundle, else None."""
    manifest = root / "manifest.json"
    if manifest.is_symlink() or not manifest.is_file():  # a link is not published (_files), nor read
        return None
    latest = pub.get_json(f"{base}/latest.json")
    if not isinstance(latest, dict) or not latest.get("rev"):
        return None
    stored = pub.get_json(f"{base}/{latest['rev']}/manifest.json")
    mine = json.loads(manifest.read_bytes())
    return str(latest["rev"]) if _stable_manifest(stored) == _stable_manifest(mine) else None


def run(ctx: StageContext) -> StageResult:
    project_id = ctx.spec.project_id or ""
    base = project_prefix(project_id, ctx.settings.s3_prefix)
    rev = ctx.job_id
    pub = S3Publisher.from_settings(ctx.settings)
    root, as_is = _bundle_root(ctx)
    rels = _files(root)
    cursor: JSON = ctx.cursor or {"next": 0, "uploaded": 0, "skipped": 0}
    if cursor["next"] == 0 and not as_is:
        same = _unchanged_revision(pub, base, root)
        if same is not None:
            ctx.log(f"upload: the bundle is identical to revision {same}, already live; nothing uploaded")
            total = sum(len(object_keys(r, project_id, same, root=ctx.settings.s3_prefix)) for r in rels)
            return StageResult.done(publishInfo=_publish_info(ctx, same, base, total, 0, total, []),
                                    rev=same, unchanged=True, latest=True).counting(
                items=total, hits={"uploads": total}, misses={"uploads": 0})
    # Shared objects first and the revision's own files after: a reader that finds a revision finds
    # everything it links to. One listing per task run settles which objects are already there.
    plan = sorted(((key, rel) for rel in rels
                   for key in object_keys(rel, project_id, rev, as_is, ctx.settings.s3_prefix)),
                  key=lambda kr: (f"{base}/_shared/" not in kr[0], kr[0]))
    existing = {}
    for prefix in (f"{base}/_shared/", f"{base}/{rev}/"):
        existing.update(pub.list_objects(prefix))
    while cursor["next"] < len(plan):
        step = plan[cursor["next"]:cursor["next"] + ctx.settings.upload_batch]
        report = pub.upload({key: root / rel for key, rel in step}, project_id=project_id,
                            org_id=ctx.spec.org_id, job_id=ctx.job_id, existing=existing)
        if report.failed:
            info = _publish_info(ctx, rev, base, len(plan), int(cursor["uploaded"]) + len(report.uploaded),
                                 int(cursor["skipped"]) + len(report.skipped), report.failed)
            # For the failure callback: the job has no result then.
            ctx.artifacts.put_json(FAILED_UPLOAD.key(ctx.job_id), {**info, "published": False})
            _raise_failed(report)
        cursor = {"next": cursor["next"] + len(step), "uploaded": cursor["uploaded"] + len(report.uploaded),
                  "skipped": cursor["skipped"] + len(report.skipped)}
        ctx.save_cursor(cursor)
        ctx.progress(cursor["next"], len(plan))
        if cursor["next"] < len(plan) and ctx.should_yield():
            return StageResult.more()
    moved = _move_latest(ctx, pub, base, rev) if not as_is else False
    info = _publish_info(ctx, rev, base, len(plan), int(cursor["uploaded"]), int(cursor["skipped"]), [])
    ctx.log(f"upload: {cursor['uploaded']} uploaded, {cursor['skipped']} already there, "
            f"revision {rev} {'is live' if moved else 'is stored (a later submission is live)'}")
    return StageResult.done(publishInfo=info, rev=rev, unchanged=False, latest=moved).counting(
        items=len(plan), hits={"uploads": int(cursor["skipped"])}, misses={"uploads": int(cursor["uploaded"])})


def _raise_failed(report: UploadReport) -> None:
    listed = "; ".join(f"{f.key}: {f.error}" for f in report.failed[:5])
    more = f" (and {len(report.failed) - 5} more)" if len(report.failed) > 5 else ""
    message = f"{len(report.failed)} file(s) failed to upload, the revision is not published: {listed}{more}"
    # Given-up transient failures are worth another attempt later (the uploaded files are skipped then).
    if all(f.transient for f in report.failed):
        raise TransientError(message)
    raise PermanentError(message)


def _move_latest(ctx: StageContext, pub: S3Publisher, base: str, rev: str) -> bool:
    seq = ctx.submission_seq()
    pointer = {"rev": rev, "jobId": ctx.job_id, "seq": seq if seq is not None else ctx.spec.created_at,
               "publishedAt": now_iso()}
    return move_pointer(pub.client, pub.bucket, f"{base}/latest.json", pointer)


def _publish_info(ctx: StageContext, rev: str, base: str, total: int, uploaded: int, skipped: int,
                  failed: list[FailedUpload]) -> JSON:
    public = ctx.settings.public_base_url.rstrip("/")
    return {
        "published": True, "projectId": ctx.spec.project_id, "orgId": ctx.spec.org_id, "jobId": ctx.job_id,
        "rev": rev, "bucket": ctx.settings.s3_bucket,
        "r2ContentPath": f"{base}/{rev}/", "r2MediaPath": f"{base}/_shared/medias/",
        "r2PostsPath": f"{base}/_shared/posts/",
        "publicContentUrl": f"{public}/{base}/{rev}/", "publicMediaUrl": f"{public}/{base}/_shared/medias/",
        "publicPostsUrl": f"{public}/{base}/_shared/posts/",
        "totalFiles": total, "successfulUploads": uploaded, "skippedUploads": skipped,
        "failedUploads": len(failed), "failedKeys": [f.key for f in failed], "timestamp": now_iso(),
    }
