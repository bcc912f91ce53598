"""The media of a WordPress import, downloaded before the conversion: one URL at a time, checkpointed, budgeted.

A media host that accepts connections and never answers would hold a one-task download loop past the soft time
limit, and every retry would start again from the first URL. So the source stage of `wp-import` first lists the
URLs a conversion would fetch (`media_urls`), then downloads them here, saving the cursor after each one: a
continuation or a retry resumes at the next URL. Each download goes through the outbound policy
(pipeline/http/safe_fetch.py) with its own timeout, and all of them together get `wp_media_budget_s` of wall time
(counted from the first, across continuations); a URL that fails, or that the budget leaves no time for, is an
outcome like a download: the conversion keeps its original URL and records an issue.
"""

from __future__ import annotations

import hashlib
import time

from pipeline.errors import ItemError, PipelineError
from pipeline.http.address_policy import image_policy
from pipeline.models import JSON
from pipeline.sources.wordpress import Downloader, default_downloader, media_urls
from pipeline.stages.context import StageContext

URLS = "wp/media-urls.json"
PHASE = "media"


def _key(ctx: StageContext, url: str, outcome: str) -> str:
    return ctx.key(f"wp/media/{hashlib.sha256(url.encode()).hexdigest()}.{outcome}")


def download_media(ctx: StageContext, xml: bytes) -> bool:
    """Download what is left of the import's media; True once every URL has an outcome, False to continue later."""
    cursor: JSON = ctx.cursor or {}
    if cursor.get("phase") != PHASE:
        urls = media_urls(xml)
        ctx.artifacts.put_json(ctx.key(URLS), urls)
        cursor = {"phase": PHASE, "next": 0, "total": len(urls), "started": time.time()}
        ctx.save_cursor(cursor)
    urls = ctx.artifacts.get_json(ctx.key(URLS))
    settings = ctx.settings
    fetch = default_downloader(policy=image_policy(settings), max_bytes=settings.image_fetch_max_bytes,
                               timeout_s=settings.wp_media_timeout_s)
    done = int(cursor["next"])
    worked = False
    while done < len(urls):
        # at least one URL per call, so even a tiny budget makes progress
        if worked and ctx.should_yield():
            return False
        url = str(urls[done])
        if time.time() - float(cursor["started"]) >= settings.wp_media_budget_s:
            reason = f"not downloaded: the import's media budget of {settings.wp_media_budget_s:g}s was spent"
            ctx.artifacts.put_json(_key(ctx, url, "failed"), {"reason": reason})
        else:
            try:
                ctx.artifacts.put_bytes(_key(ctx, url, "bytes"), fetch(url))
            except (PipelineError, OSError) as exc:
                ctx.artifacts.put_json(_key(ctx, url, "failed"), {"reason": f"{type(exc).__name__}: {exc}"})
        done += 1
        worked = True
        cursor = {**cursor, "next": done}
        ctx.save_cursor(cursor)
        ctx.progress(done, len(urls))
    return True


def downloaded(ctx: StageContext) -> Downloader:
    """A downloader answering from what download_media saved: the bytes, or the reason it failed then."""

    def read(url: str) -> bytes:
        got = _key(ctx, url, "bytes")
        if ctx.artifacts.exists(got):
            return ctx.artifacts.get_bytes(got)
        failed = _key(ctx, url, "failed")
        if ctx.artifacts.exists(failed):
            raise ItemError(url, str(ctx.artifacts.get_json(failed)["reason"]))
        raise ItemError(url, "not downloaded: the URL was not among those planned")

    return read
