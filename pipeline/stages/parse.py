"""parse: the fetched repository tree → posts, medias, graph, source files and issues (CONTRACT §3 entries).

In the plan → batches → assemble shape of `fanout.py`:
1. discovery (plan): find posts and media, hash media, read frontmatter, assign slugs → `index.json`, which also
   fixes the batch size, so every batch and every continuation cuts the same batches;
2. render: each batch renders its posts into `batch-NNNNN.json` on whichever pool process takes it (mistune is
   most of parse's time, and one process renders one post at a time); the output is deterministic, so a batch
   redone after a crash or a redelivery writes the same bytes;
3. assemble: post hashes → links, graph and parse's entries of catalog.py, rebuilt from the index and batches,
   the posts streamed a batch at a time into POST_LINES; the batches' issues are recorded here, with the stage's
   last checkpoint, so each is listed once in the job's issues, as in PROCESSOR_ISSUES, however often a batch ran.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pipeline.catalog import (
    GIT_DATES,
    GRAPH,
    MEDIAS,
    PARSE_META,
    POST_LINES,
    PROCESSOR_ISSUES,
    SOURCE_FILES,
    SOURCE_TREE,
    Artifact,
)
from pipeline.errors import ItemError, PermanentError
from pipeline.markdown.discovery import discover, repository_root, source_files
from pipeline.markdown.graph import link_graph
from pipeline.markdown.links import Resolver
from pipeline.markdown.media import MediaInfo, probe
from pipeline.markdown.posts import build_post, file_name, post_title, read_post
from pipeline.markdown.site_conventions import config_hosts, content_root, host_of, is_draft, site_urls
from pipeline.markdown.slugs import assign_slugs
from pipeline.markdown.urls import UrlScheme
from pipeline.models import JSON, Issue, Severity, StageResult
from pipeline.stages.context import BatchContext, StageContext
from pipeline.stages.fanout import run_fanned
from pipeline.stores.json_lines import LinesWriter

STAGE = "parse"


# A job's posts are cut into at least this many batches (of at most `parse_batch` posts), so that two pool
# processes share the render to its end although posts vary a lot in cost (2 to 100 ms on the opensource-guide);
# not many more, for a batch costs ~20 ms of its own in a worker (its task, Redis round trips, its output). Replayed
# with each post's own render time, 12 batches of til and the opensource-guide end within 5% of an even split.
MIN_BATCHES = 12
# The stage looks at its batches this often: a render of a few seconds would wait up to fanout.POLL_S (0.5 s,
# 1.4 ms a post on the opensource-guide) past its last batch. A look is one short task, and the stage's message
# waits behind the batches' in the queue, so it looks only while the last of them run.
RENDER_POLL_S = 0.1


def posts_per_batch(posts: int, most: int) -> int:
    """At most `most`, fewer when that would leave fewer than MIN_BATCHES batches."""
    return max(1, min(most, -(-posts // MIN_BATCHES)))


def run(ctx: StageContext) -> StageResult:
    if ctx.cursor is not None and "batch" in ctx.cursor:  # the serial parse's cursor; run_fanned's has "batches"
        _from_serial_cursor(ctx, ctx.cursor)
    return run_fanned(ctx, _plan, run_batch, _assemble, poll_s=RENDER_POLL_S)


def _from_serial_cursor(ctx: StageContext, cursor: JSON) -> None:
    """Take over a job that the serial parse (one batch after another in the stage, before the fan-out) left
    half done, e.g. across a deploy: its batch size into the index, where the batch tasks read it, and the
    batches whose issues it recorded already, which assemble must not record again."""
    size, total = int(cursor["batch"]), int(cursor["total"])
    index: JSON = ctx.artifacts.get_json(ctx.key("index.json"))
    ctx.artifacts.put_json(ctx.key("index.json"), {**index, "batch": size})
    count = _batch_count(total, size)
    recorded = count if cursor["phase"] == "assemble" else int(cursor["next"]) // size
    ctx.save_cursor({"phase": "assemble" if recorded == count else "batches", "batches": count, "dispatched": False,
                     "recorded": recorded})


def _root(ctx: StageContext | BatchContext) -> tuple[Path, Path]:
    """The fetched tree and the repository's folder in it (the job's repositoryFolder)."""
    subfolder = ctx.spec.options.get("repositoryFolder")
    if subfolder is not None and not isinstance(subfolder, str):
        raise PermanentError("repositoryFolder must be a string")
    tree = ctx.artifacts.tree(SOURCE_TREE.key(ctx.job_id))
    return tree, repository_root(tree, subfolder)


def _plan(ctx: StageContext) -> int:
    tree, root = _root(ctx)
    rel_root = root.relative_to(tree).as_posix()
    return _discover(ctx, root, "" if rel_root == "." else rel_root)


def url_scheme(ctx: StageContext | BatchContext) -> UrlScheme:
    opts = ctx.spec.options
    return UrlScheme(note_prefix=str(opts.get("notePrefix") or ctx.settings.note_prefix),
                     media_prefix=str(opts.get("mediaPrefix") or ctx.settings.media_prefix),
                     domain=str(opts["domain"]) if opts.get("domain") else None)


def _issue(path: str, message: str, severity: Severity, kind: str) -> Issue:
    return Issue(stage=STAGE, path=path, message=message, severity=severity, kind=kind)


def include_drafts(ctx: StageContext) -> bool:
    value = ctx.spec.options.get("includeDrafts")
    if value is not None and not isinstance(value, bool):
        raise PermanentError("includeDrafts must be true or false")
    return bool(value)


def _git_dates(ctx: StageContext, rel_root: str) -> dict[str, list[str]]:
    """[gitCreated, gitModified] by path under the job's root, when fetch read the history."""
    key = GIT_DATES.key(ctx.job_id)
    if not ctx.artifacts.exists(key):
        return {}
    files: dict[str, list[str]] = ctx.artifacts.get_json(key)["files"]
    if not rel_root:
        return files
    prefix = rel_root + "/"
    return {p[len(prefix):]: d for p, d in files.items() if p.startswith(prefix)}


def _medias(root: Path, found: list[str], git: dict[str, list[str]],
            issues: list[Issue]) -> tuple[list[MediaInfo], list[JSON]]:
    """Every media file probed (its problems in `issues`), and its entry with its git dates.

    Probing decodes every image (0.25 s of the opensource-guide's 0.5 s of discovery) while the other pool
    processes wait for the render batches, and Pillow decodes without the GIL: a thread per core probes them."""

    def probed(rel: str) -> MediaInfo | OSError:
        try:
            return probe(root, rel)
        except OSError as exc:
            return exc

    medias: list[MediaInfo] = []
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        results = list(pool.map(probed, found))
    for rel, info in zip(found, results, strict=True):
        if isinstance(info, OSError):
            issues.append(_issue(rel, f"cannot read media file: {info.strerror or info}", "error", "media"))
            continue
        if info.problem:
            issues.append(_issue(rel, info.problem, "warning", "media"))
        medias.append(info)
    entries = [m.entry() for m in medias]
    for entry in entries:
        if entry["originalPath"] in git:
            entry["gitCreated"], entry["gitModified"] = git[entry["originalPath"]]
    return medias, entries


def _discover(ctx: StageContext, root: Path, rel_root: str) -> int:
    """The index of the job's posts and media, written; its issues recorded (the plan's checkpoint writes them).
    How many batches the posts make."""
    found = discover(root)
    git = _git_dates(ctx, rel_root)
    site_root = content_root(found.posts)
    with_drafts = include_drafts(ctx)
    drafts = 0
    issues: list[Issue] = []
    medias, media_entries = _medias(root, found.medias, git, issues)
    hosts, problems = config_hosts(root)
    issues.extend(_issue(p.split(":", 1)[0], p, "info", "config") for p in problems)
    # the job's `domain` is where the bundle's pages are served: a link to it is a link inside the site too
    domain = host_of(str(ctx.spec.options.get("domain") or ""))
    if domain and domain not in hosts:
        hosts.append(domain)
    posts: list[JSON] = []
    for rel in found.posts:
        try:
            frontmatter, _ = read_post(root, rel)
        except ItemError as exc:
            issues.append(_issue(rel, exc.reason, "error", "parse-error"))
            continue
        if not with_drafts and is_draft(frontmatter, rel):
            drafts += 1
            continue
        post: JSON = {"path": rel, "fmSlug": frontmatter.get("slug"), "fileName": file_name(rel),
                      "title": post_title(frontmatter, rel), "siteUrls": site_urls(rel, frontmatter, site_root)}
        if rel in git:
            post["git"] = git[rel]
        posts.append(post)
    if drafts:
        ctx.log(f"parse: {drafts} drafts left out (includeDrafts puts them in)")
    slugs = assign_slugs((p["path"], p["fmSlug"]) for p in posts)
    for p in posts:
        del p["fmSlug"]
        slug = slugs[p["path"]]
        p["slug"], p["slugInfo"] = slug.final, slug.to_json()
        if slug.asked_bytes is not None:
            issues.append(_issue(p["path"], f"slug of {slug.asked_bytes:,} bytes is too long for a file name; "
                                            f"using {slug.desired!r}", "warning", "slug"))
        if slug.final != slug.desired:
            issues.append(_issue(p["path"], f"slug {slug.desired!r} is taken; using {slug.final!r}", "info", "slug"))
    batch = posts_per_batch(len(posts), int(ctx.settings.parse_batch))
    ctx.artifacts.put_json(ctx.key("index.json"), {
        # Fixed here, before the cursor says the plan is done: a continuation with other settings, and every
        # batch task, cuts the same batches.
        "batch": batch,
        "root": rel_root,
        "contentRoot": site_root,
        "siteHosts": hosts,
        "drafts": drafts,
        "posts": posts,
        "medias": {m.path: m.to_index() for m in medias},
        "mediaEntries": media_entries,
        "issues": [i.to_json() for i in issues],
    })
    for issue in issues:
        ctx.record_issue(issue)
    ctx.log(f"parse: {len(posts)} posts to render in batches of {batch}")
    return _batch_count(len(posts), batch)


def _batch_count(posts: int, size: int) -> int:
    return (posts + size - 1) // size


def _batch_key(ctx: StageContext | BatchContext, number: int) -> str:
    return ctx.key(f"batch-{number:05d}.json")


# The index and its resolver of the last batch this process rendered, by the index's bytes and the URL scheme:
# a process renders a job's batches one after another, and reading the index and building the resolver is a
# fifth of a batch's own cost on the corpora (10 ms on the opensource-guide). A rewritten index never matches.
_last_resolver: tuple[tuple[str, str, UrlScheme], JSON, Resolver] | None = None


def _index_and_resolver(ctx: BatchContext) -> tuple[JSON, Resolver]:
    global _last_resolver
    key = ctx.key("index.json")
    raw = ctx.artifacts.get_bytes(key)
    seen = (key, hashlib.sha256(raw).hexdigest(), url_scheme(ctx))
    if _last_resolver is None or _last_resolver[0] != seen:
        index: JSON = json.loads(raw)
        _last_resolver = seen, index, Resolver(index["posts"], index["medias"], seen[2], index.get("contentRoot", ""),
                                               index.get("siteHosts", ()))
    return _last_resolver[1], _last_resolver[2]


def run_batch(ctx: BatchContext, n: int) -> None:
    """Render batch n's posts into `batch-NNNNN.json`, with the issues they raise (recorded by assemble).
    Idempotent: the same posts render to the same bytes, so a redelivered batch rewrites what it wrote."""
    index, resolver = _index_and_resolver(ctx)
    _, root = _root(ctx)
    size = int(index["batch"])
    rendered: list[JSON] = []
    issues: list[Issue] = []
    for post in index["posts"][n * size:(n + 1) * size]:
        rel = post["path"]
        ctx.working_on(rel)
        try:
            out = build_post(root, rel, post["slugInfo"], resolver, post.get("git"))
        except ItemError as exc:
            issues.append(_issue(rel, exc.reason, "error", "parse-error"))
            continue
        rendered.append({"entry": out.entry, "linkPaths": out.link_paths, "mediaPaths": out.media_paths})
        issues.extend(_issue(rel, p.message, p.severity, p.kind) for p in out.problems)
    ctx.artifacts.put_json(_batch_key(ctx, n), {"posts": rendered, "issues": [i.to_json() for i in issues]})


def _assemble(ctx: StageContext, total: int) -> StageResult:
    """POST_LINES a batch at a time, never the corpus whole: a first pass learns each post's hash (links name posts
    by hash) and records the batches' issues, the second writes each batch's entries with their links as one part.
    The batches are in path order already (discovery sorts the paths, a batch keeps their order)."""
    _, root = _root(ctx)
    index: JSON = ctx.artifacts.get_json(ctx.key("index.json"))
    numbers = range(total)
    issues: list[JSON] = list(index["issues"])
    post_hashes: dict[str, str] = {}
    last = ""
    recorded = int((ctx.cursor or {}).get("recorded", 0))  # by the serial parse of a job begun before the fan-out
    for number in numbers:
        batch = ctx.artifacts.get_json(_batch_key(ctx, number))
        issues.extend(batch["issues"])
        for issue in batch["issues"] if number >= recorded else ():
            # Held until the stage's done checkpoint, which writes them with it: an assemble redone after a kill
            # records them again, a batch redone never did.
            ctx.record_issue(Issue(**issue))
        for r in batch["posts"]:
            path = str(r["entry"]["originalFilePath"])
            if path < last:
                raise PermanentError(f"parse batch {number} is out of path order at {path!r} (after {last!r})")
            last = path
            post_hashes[path] = str(r["entry"]["hash"])
    media_hashes = {path: str(info["hash"]) for path, info in index["medias"].items()}
    heads: list[JSON] = []  # what the link graph needs of each post
    post_media: dict[str, list[str]] = {}
    writer = LinesWriter(ctx.artifacts, POST_LINES.key(ctx.job_id))
    for number in numbers:
        part: list[JSON] = []
        for r in ctx.artifacts.get_json(_batch_key(ctx, number))["posts"]:
            entry = r["entry"]
            # A link to a post that failed to render is dropped here; its broken state was reported with the failure.
            entry["links"] = sorted({post_hashes[p] for p in r["linkPaths"] if p in post_hashes})
            post_media[entry["hash"]] = [media_hashes[m] for m in r["mediaPaths"] if m in media_hashes]
            heads.append({"hash": entry["hash"], "title": entry["title"], "links": entry["links"]})
            part.append(entry)
        writer.part(part)
    medias: list[JSON] = sorted(index["mediaEntries"], key=lambda m: str(m["originalPath"]))
    def put(artifact: Artifact, value: Any) -> None:
        ctx.artifacts.put_json(artifact.key(ctx.job_id), value)

    put(MEDIAS, medias)
    put(GRAPH, link_graph(heads, medias, post_media))
    put(SOURCE_FILES, source_files(root))
    drafts = int(index.get("drafts", 0))
    put(PROCESSOR_ISSUES, issue_report(issues, drafts))
    put(PARSE_META, {"root": index["root"], "posts": len(heads), "medias": len(medias), "drafts": drafts})
    writer.close()  # last: the posts' header tells later stages (and a resumed parse) that all is written
    ctx.log(f"parse: {len(heads)} posts, {len(medias)} medias, {drafts} drafts left out, {len(issues)} issues")
    return StageResult.done(posts=len(heads), medias=len(medias), issues=len(issues), drafts=drafts).counting(
        items=len(heads) + len(medias))


def issue_report(issues: list[dict[str, Any]], drafts: int = 0) -> JSON:
    severities = Counter(str(i.get("severity")) for i in issues)
    kinds = Counter(str(i.get("kind")) for i in issues)
    return {"issues": issues, "summary": {
        "totalIssues": len(issues), "errorCount": severities["error"], "warningCount": severities["warning"],
        "infoCount": severities["info"], "brokenLinks": kinds["broken-link"], "parseErrors": kinds["parse-error"],
        "categoryCounts": dict(sorted(kinds.items())), "draftsLeftOut": drafts,
    }}
