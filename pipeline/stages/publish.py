"""publish: the outputs of the build stages → the bundle of CONTRACT §3.

Into a local output folder (LocalFolderTarget), or, for the tasks that deploy to a bucket, into the
artifact store (BUNDLE, `jobs/<id>/publish/bundle`), where the `upload` stage takes it on any worker.
The bundle is all-or-nothing: it is written into a hidden staging folder and installed in one
rename, so there is no cursor to resume from; a retried attempt starts over (and gives the same
bytes: JSON is written with sorted keys, lists in the parse stage's order).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pipeline.catalog import (
    BUNDLE,
    CONTENT_DB,
    ENRICHMENT,
    GRAPH,
    MEDIA_VECTORS,
    MEDIAS,
    PARSE_META,
    POST_SIMILARITY,
    POST_VECTORS,
    PROCESSOR_ISSUES,
    SIMILAR_POSTS,
    SOURCE_FILES,
    SOURCE_INFO,
    SOURCE_TREE,
    VARIANTS,
    VARIANTS_IN_BUCKET,
    Artifact,
)
from pipeline.images.variant_cache import VariantCache
from pipeline.images.variants import VariantInfo, media_sizes_entry, variant_filename
from pipeline.markdown.urls import media_filename
from pipeline.models import JSON, Issue, StageResult
from pipeline.plans import publishes_to_bucket
from pipeline.stages.bundle_writer import BundleWriter
from pipeline.stages.context import StageContext
from pipeline.stages.parsed_posts import iter_posts
from pipeline.stores.artifacts import is_no_space
from pipeline.stores.vectors import Matrix, has_matrix, read_matrix
from pipeline.targets.local import LocalFolderTarget
from pipeline.timestamps import now_iso

# Files the bundle describes itself with; files-dist.json lists every other file.
SELF_DESCRIBING = ("files-dist.json", "manifest.json")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NAME_MAX = 255  # bytes per path segment on common filesystems


def issue_report(issues: list[JSON]) -> JSON:
    """The original's `{issues, summary}` shape (without its timestamps, so reruns are identical)."""
    severities = Counter(str(i.get("severity", "error")) for i in issues)
    return {"issues": issues, "summary": {
        "totalIssues": len(issues), "errorCount": severities["error"], "warningCount": severities["warning"],
        "infoCount": severities["info"],
        "categoryCounts": dict(Counter(str(i.get("kind") or i.get("category") or "item") for i in issues)),
        "moduleCounts": dict(Counter(str(i.get("stage") or i.get("module") or "unknown") for i in issues))}}


def _issue_key(issue: JSON) -> tuple[str, ...]:
    return tuple(str(issue.get(k) or "") for k in ("stage", "path", "message", "severity", "kind"))


def _other_issues(processor_issues: JSON, issues: list[JSON]) -> list[JSON]:
    """The issues of every stage but parse's (processor-issues.json has those), each once: stages record theirs in
    the job as they go, and publish's own may be recorded already by an earlier attempt."""
    seen = {_issue_key(i) for i in processor_issues.get("issues") or []}
    out = []
    for issue in issues:
        key = _issue_key(issue)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out


def files_listing(files: dict[str, tuple[str, int]]) -> list[JSON]:
    """files-dist.json: `[{path, filename, extension, size, folder}]`, as the original listed a folder."""
    out = []
    for rel in sorted(files):
        if rel in SELF_DESCRIBING:
            continue
        parts = rel.split("/")
        out.append({"path": rel, "filename": parts[-1], "extension": Path(parts[-1]).suffix.lstrip("."),
                    "size": files[rel][1], "folder": parts[:-1]})
    return out


def _slug_problem(slug: str) -> str | None:
    """Why `_posts/slug/<slug>.json` cannot be written, if it cannot. Nested slugs (a/b) are fine."""
    if not slug:
        return "has no slug"
    if slug == "index":
        return "has the slug 'index', which would overwrite _posts/slug/index.json"
    parts = slug.split("/")
    if any(p in ("", ".", "..") or "\0" in p or "\\" in p for p in parts):
        return f"has a slug that is not a safe file path: {slug!r}"
    if any(len(p.encode()) + len(".json") > _NAME_MAX for p in parts):
        return f"has a slug longer than a file name may be ({_NAME_MAX} bytes)"
    return None


def _public_url(url: str | None) -> str | None:
    """A source URL without credentials, for the manifest."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        netloc += f":{parts.port}" if parts.port else ""
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class Publisher:
    def __init__(self, ctx: StageContext, writer: BundleWriter) -> None:
        self.ctx, self.w = ctx, writer
        self.issues: list[Issue] = []
        # Files of the revision that live in the bucket already: in files-dist.json, not in the folder.
        self.elsewhere: dict[str, tuple[str, int]] = {}
        self.slugs: dict[str, str] = {}  # each post's slug by hash, for the slug-keyed embedding map

    def _issue(self, path: str, message: str, severity: str = "warning") -> None:
        self.issues.append(Issue(stage=self.ctx.stage, path=path, message=message,
                                 severity="error" if severity == "error" else "warning"))

    def posts(self, posts: Iterable[JSON]) -> int:
        """`_posts/` and posts.json, a post at a time (posts.json written as they pass); returns how many."""
        slug_map: dict[str, str] = {}
        path_map: dict[str, str] = {}
        index: list[JSON] = []
        count = 0
        for post in self.w.json_list("posts.json", posts):
            count += 1
            h, slug, path = str(post.get("hash") or ""), str(post.get("slug") or ""), post.get("originalFilePath")
            self.slugs[h] = slug
            where = str(path or slug or h)
            if not _SAFE_NAME.match(h):
                self._issue(where, f"post has no usable hash ({h!r}); left out of _posts/", "error")
                continue
            self.w.json(f"_posts/hash/{h}.json", post)
            index.append({"slug": slug, "hash": h, "title": post.get("title"),
                          "colophon": (post.get("frontmatter") or {}).get("colophon")})
            if path:
                path_map[str(path)] = h
            if slug in slug_map:
                self._issue(where, f"slug {slug!r} is already taken by post {slug_map[slug]}; this post is "
                                   "reachable by hash only")
                continue
            slug_map[slug] = h
            problem = _slug_problem(slug)
            if problem:
                self._issue(where, f"post {problem}; it is reachable by hash only")
                continue
            self.w.json(f"_posts/slug/{slug}.json", post)
        self.w.json("_posts/hash/index.json", index)
        self.w.json("_posts/slug/index.json", index)
        self.w.json("posts-slug-map.json", slug_map)
        self.w.json("posts-path-map.json", path_map)
        return count

    def medias(self, medias: list[JSON], tree: Path | None, prefix: str, resized: dict[str, list[VariantInfo]],
               in_bucket: frozenset[str] = frozenset()) -> None:
        """`_medias/` and the media maps: the variants where embed_images made them, else the file as is."""
        path_map: dict[str, str] = {}
        url_map: dict[str, str] = {}
        hash_map: dict[str, str] = {}
        hash_url: dict[str, str] = {}
        copied: set[str] = set()
        cache = VariantCache(self.ctx.artifacts)
        for n, media in enumerate(medias, start=1):
            original = str(media.get("originalPath") or "")
            h = str(media.get("hash") or (media.get("metadata") or {}).get("hash") or "")
            ext = str(media.get("fileExt") or "")
            infos = resized.get(h)
            name = media_filename(h, ext, infos is not None)
            if not _SAFE_NAME.match(h) or not _SAFE_NAME.match(name):
                self._issue(original, f"media has no usable hash ({h!r}); left out of the bundle", "error")
                continue
            if infos is not None:
                media = {**media, "sizes": media_sizes_entry(h, infos, prefix)}
                medias[n - 1] = media
            url = f"{prefix}/{name}"
            path_map[original], url_map[original], hash_map[original], hash_url[h] = name, url, h, url
            if name not in copied and infos is not None:
                for info in infos:
                    rel = f"_medias/{variant_filename(h, info)}"
                    if h in in_bucket:
                        # In the project's bucket already (stage `existing`): listed, not copied.
                        self.elsewhere[rel] = ("", info.nbytes)
                    elif rel not in self.w.files:
                        self.w.write(rel, cache.get_file(h, info))
                copied.add(name)
            elif name not in copied and self._copy(original, h, name, tree):
                copied.add(name)
            if n % 50 == 0:
                # Cancellation and a lost lease surface here; the budget is not honoured, the bundle
                # being all-or-nothing.
                self.ctx.should_yield()
        self.w.json("medias.json", medias)
        self.w.json("media-path-map.json", path_map)
        self.w.json("media-path-url-map.json", url_map)
        self.w.json("media-path-hash-map.json", hash_map)
        self.w.json("media-hash-url-map.json", hash_url)

    def _copy(self, original: str, h: str, name: str, tree: Path | None) -> bool:
        src = self._source(original, tree)
        if src is None:
            return False
        rel = f"_medias/{name}"
        try:
            digest = self.w.copy(rel, src)
        except OSError as exc:
            self.w.remove(rel)
            if is_no_space(exc):
                raise  # the disk's fault, not the media file's: the stage retries, the bundle loses nothing
            self._issue(original, f"media file could not be read: {exc.strerror or exc}")
            return False
        if digest != h:
            self.w.remove(rel)
            self._issue(original, "media file changed since it was parsed (hash differs); not published")
            return False
        return True

    def _source(self, original: str, tree: Path | None) -> Path | None:
        rel = Path(original)
        if tree is None or not original or rel.is_absolute() or ".." in rel.parts:
            self._issue(original, "media file has no path inside the repository; not published")
            return None
        src = tree / rel
        if not src.is_file():
            self._issue(original, "media file vanished from the repository after parsing; not published")
            return None
        # A symlink in a repository must not publish a file of the machine that built it.
        if not src.resolve().is_relative_to(tree.resolve()):
            self._issue(original, "media file is a link to outside the repository; not published", "error")
            return None
        return src


def _source_info(ctx: StageContext) -> JSON:
    key = SOURCE_INFO.key(ctx.job_id)
    src: JSON = ctx.artifacts.get_json(key) if ctx.artifacts.exists(key) else {}
    spec = ctx.spec.source
    return {"commit": src.get("commit") or (spec.commit if spec else None),
            "branch": src.get("branch") or (spec.branch if spec else None),
            "url": _public_url(src.get("url") or (spec.url if spec else None))}


def _resized(ctx: StageContext) -> dict[str, list[VariantInfo]]:
    """The variants embed_images made, by media hash; none when the job did not resize."""
    key = VARIANTS.key(ctx.job_id)
    if not ctx.artifacts.exists(key):
        return {}
    found: dict[str, list[JSON]] = ctx.artifacts.get_json(key)
    return {h: [VariantInfo(**v) for v in infos] for h, infos in found.items()}


def _in_bucket(ctx: StageContext) -> frozenset[str]:
    key = VARIANTS_IN_BUCKET.key(ctx.job_id)
    return frozenset(ctx.artifacts.get_json(key)) if ctx.artifacts.exists(key) else frozenset()


def _enriched(ctx: StageContext) -> Iterator[JSON]:
    """The posts, one at a time, with enrich's backlinks and reading time when the job ran enrich."""
    key = ENRICHMENT.key(ctx.job_id)
    extra: dict[str, JSON] = ctx.artifacts.get_json(key) if ctx.artifacts.exists(key) else {}
    for post in iter_posts(ctx.artifacts, ctx.job_id):
        yield {**post, **extra.get(str(post.get("hash")), {})} if extra else post


def _vector_map(w: BundleWriter, rel: str, keys: Iterable[tuple[str, int]], vecs: Matrix) -> None:
    """`{key: floats}` of the rows, an entry encoded at a time (never a dict of Python floats); a key given twice
    keeps its last row, as a dict would."""
    rows = dict(keys)
    w.json_map(rel, ((k, _floats(vecs[rows[k]])) for k in sorted(rows)))


def _vector_files(ctx: StageContext, w: BundleWriter, slugs: dict[str, str]) -> JSON:
    """The embedding and similarity files of CONTRACT §3; returns which model made which vectors."""
    store, models = ctx.artifacts, {}
    post_key = POST_VECTORS.key(ctx.job_id)
    if has_matrix(store, post_key):
        vecs, header = read_matrix(store, post_key)  # a row per post: linear, and small next to the posts
        ids = [str(i) for i in header["ids"]]
        _vector_map(w, "posts-embedding-hash-map.json", ((h, n) for n, h in enumerate(ids)), vecs)
        _vector_map(w, "posts-embedding-slug-map.json", ((slugs[h], n) for n, h in enumerate(ids) if h in slugs),
                    vecs)
        models["text"] = {"model": header.get("model"), "dim": header.get("dim")}
    media_key = MEDIA_VECTORS.key(ctx.job_id)
    if has_matrix(store, media_key):
        vecs, header = read_matrix(store, media_key)
        _vector_map(w, "media-embedding-hash-map.json", ((str(h), n) for n, h in enumerate(header["ids"])), vecs)
        models["image"] = {"model": header.get("model"), "dim": header.get("dim"), "kind": header.get("kind")}
    for name, artifact in (("posts-similarity.json", POST_SIMILARITY), ("posts-similar-hash.json", SIMILAR_POSTS)):
        key = artifact.key(ctx.job_id)
        if store.exists(key):
            w.from_store(name, store, key)
    return models


def _floats(vec: Any) -> list[float]:
    # float32 → shortest decimal that reads back to the same float32, so files stay small and exact
    return [float(f"{x:.8g}") for x in vec.tolist()]


def run(ctx: StageContext) -> StageResult:
    store = ctx.artifacts

    def parsed(artifact: Artifact, default: Any = None) -> Any:
        key = artifact.key(ctx.job_id)
        return store.get_json(key) if default is None or store.exists(key) else default

    posts = _enriched(ctx)
    medias: list[JSON] = parsed(MEDIAS, [])
    meta: JSON = parsed(PARSE_META, {})
    tree = None
    if medias:
        tree = store.tree(SOURCE_TREE.key(ctx.job_id)) / str(meta.get("root") or "")
    prefix = str(ctx.spec.options.get("mediaPrefix") or ctx.settings.media_prefix).rstrip("/")
    extra_key = ctx.key("worker-issues.json")
    extra = store.get_json(extra_key) if store.exists(extra_key) else []
    extra_issues: list[JSON] = list(extra.get("issues", []) if isinstance(extra, dict) else extra)
    processor_issues = parsed(PROCESSOR_ISSUES, {}) or issue_report([])
    db_key = CONTENT_DB.key(ctx.job_id)

    rev = ctx.job_id
    to_bucket = publishes_to_bucket(ctx.spec.task)
    target = LocalFolderTarget(ctx.spec.output or ctx.settings.output)
    # A bundle bound for a bucket goes into the artifact store, where the upload stage (on any
    # worker, on any machine) finds it; otherwise it is installed in the output folder.
    opened = store.write_tree(BUNDLE.key(ctx.job_id)) if to_bucket else target.open_revision(rev)
    with opened as staging:
        w = BundleWriter(staging)
        pub = Publisher(ctx, w)
        post_count = pub.posts(posts)
        pub.medias(medias, tree, prefix, _resized(ctx), _in_bucket(ctx))
        w.json("graph.json", parsed(GRAPH, {"nodes": [], "edges": []}))
        w.json("files-source.json", parsed(SOURCE_FILES, []))
        w.json("processor-issues.json", processor_issues)
        models = _vector_files(ctx, w, pub.slugs)
        if store.exists(db_key):
            w.from_store("content.sqlite", store, db_key)
        worker_issues = _other_issues(processor_issues, extra_issues + ctx.recorded_issues()
                                      + [i.to_json() for i in pub.issues])
        w.json("worker-issues.json", issue_report(worker_issues))
        w.json("files-dist.json", files_listing({**pub.elsewhere, **w.files}))
        w.json("manifest.json", {
            "revision": rev, "jobId": ctx.job_id, "task": ctx.spec.task, "projectId": ctx.spec.project_id,
            "source": _source_info(ctx),
            "createdAt": now_iso(),
            "counts": {"posts": post_count, "medias": len(medias),
                       "issues": len(processor_issues.get("issues") or []) + len(worker_issues)},
            "models": models,
            "files": {rel: sha for rel, (sha, _size) in sorted(w.files.items())},
        })
        ctx.should_yield()  # last chance to notice a cancel or a lost lease before going live
    # Recorded only once the revision is live, so a retried attempt does not record them twice.
    for issue in pub.issues:
        ctx.record_issue(issue)
    ctx.progress(post_count + len(medias), post_count + len(medias))
    where = BUNDLE.key(ctx.job_id) if to_bucket else str(target.revision_path(rev))
    ctx.log(f"published revision {rev} to {where}: {len(w.files)} files")
    return StageResult.done(path=None if to_bucket else where, bundle=where if to_bucket else None,
                            files=len(w.files), bytes=sum(size for _sha, size in w.files.values()))
