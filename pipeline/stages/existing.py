"""existing: what the project already has in the bucket, so a rebuild redoes only what changed.

The original's fetch-existing / `previousRev`. Before building, it lists the project's shared media
(paginated) and fetches the live revision's `medias.json` and `content.sqlite` (or those of
`data.previousRev`). Later stages then reuse them even when this worker's caches are cold (a new pod,
another machine): embed_images takes the variants already in `_shared/medias/` instead of encoding
them again, and embed_text takes the vectors of unchanged posts and passages from the old database.

Outputs: LIVE_REVISION {rev, medias: {sha: [variant info]}} and LIVE_DATABASE, if any (catalog.py);
previous_revision.py reads them for the later stages.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.catalog import LIVE_DATABASE, LIVE_REVISION
from pipeline.images.variants import SIZES, VariantInfo, variant_filename
from pipeline.models import JSON, StageResult
from pipeline.stages.context import StageContext
from pipeline.targets.bucket_layout import project_prefix
from pipeline.targets.s3 import S3Publisher
from pipeline.targets.s3_client import as_pipeline_error, is_missing


def run(ctx: StageContext) -> StageResult:
    base = project_prefix(ctx.spec.project_id or "", ctx.settings.s3_prefix)
    pub = S3Publisher.from_settings(ctx.settings)
    rev = ctx.spec.options.get("previousRev")
    if not rev:
        pointer: Any = pub.get_json(f"{base}/latest.json")
        rev = pointer.get("rev") if isinstance(pointer, dict) else None
    if not rev:
        ctx.artifacts.put_json(LIVE_REVISION.key(ctx.job_id), {"rev": None, "medias": {}})
        return StageResult.done(rev=None, medias=0, database=False)
    rev = str(rev)
    listed = {key.rsplit("/", 1)[1]: obj.size for key, obj in pub.list_objects(f"{base}/_shared/medias/").items()}
    medias: dict[str, list[JSON]] = {}
    entries = pub.get_json(f"{base}/{rev}/medias.json")
    for entry in entries if isinstance(entries, list) else []:
        sha = str(entry.get("hash") or "")
        infos = _variants(sha, entry.get("sizes"), listed)
        if infos:
            medias[sha] = [i._asdict() for i in infos]
    database = _fetch_database(ctx, pub, f"{base}/{rev}/content.sqlite")
    ctx.artifacts.put_json(LIVE_REVISION.key(ctx.job_id), {"rev": rev, "medias": medias})
    ctx.log(f"existing: revision {rev}, {len(medias)} images already resized in the bucket, "
            f"{'a' if database else 'no'} database to reuse vectors from")
    return StageResult.done(rev=rev, medias=len(medias), database=database)


def _variants(sha: str, sizes: Any, listed: dict[str, int]) -> list[VariantInfo] | None:
    """The variants of one image when every one of them is in the bucket with the size the entry says."""
    if not sha or not isinstance(sizes, dict):
        return None
    infos = []
    for size_name, _width in SIZES:
        rows = sizes.get(size_name)
        if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
            return None
        row = rows[0]
        info = VariantInfo(size_name, int(row["width"]), int(row["height"]), str(row["format"]), int(row["size"]))
        if listed.get(variant_filename(sha, info)) != info.nbytes:
            return None
        infos.append(info)
    return infos


def _fetch_database(ctx: StageContext, pub: S3Publisher, key: str) -> bool:
    with tempfile.TemporaryDirectory(dir=ctx.settings.temp_dir) as tmp:
        path = Path(tmp) / "content.sqlite"
        try:
            pub.client.download_file(pub.bucket, key, str(path))
        except (ClientError, BotoCoreError) as exc:
            if is_missing(exc):
                return False  # a revision published without a database (publish-build-files)
            raise as_pipeline_error(exc, f"reading s3://{pub.bucket}/{key}") from exc
        ctx.artifacts.put_bytes(LIVE_DATABASE.key(ctx.job_id), path.read_bytes())
    return True
