"""Every artifact a stage hands to another, named once (kedro's data catalog).

A stage reads what another stage wrote only through an entry here, and writes its own outputs through
its entries too, so each key is spelled in one place. A stage's working files that no other stage reads
(its batches, its plan, its index) stay its own business, under `ctx.key(name)`.

Keys are `jobs/<job_id>/<stage>/<name>` in the artifact store. They are what jobs in flight and the
published bundle rely on: an entry's stage and name never change.
"""

from __future__ import annotations

from dataclasses import dataclass


def job_key(job_id: str, stage: str, name: str) -> str:
    return f"jobs/{job_id}/{stage}/{name}"


@dataclass(frozen=True)
class Artifact:
    stage: str  # the stage that writes it
    name: str  # where, in that stage's folder of the job
    what: str  # what it holds, for whoever reads it

    def key(self, job_id: str) -> str:
        return job_key(job_id, self.stage, self.name)


# source: the repository a job starts from, when it does not name one (see stages/source.py)
MADE_REPOSITORY = Artifact("source", "result/source.json",
                           "what the source stage made: kind (git-tree | url), url, branch, commit, remote, files")
MADE_TREE = Artifact("source", "repo", "the repository the source stage made, .git included (kind git-tree)")

# fetch
SOURCE_TREE = Artifact("fetch", "tree", "the repository's files, without .git")
SOURCE_INFO = Artifact("fetch", "source.json", "where the tree came from: kind, masked url, path, branch, commit, "
                                               "files, bytes")
GIT_DATES = Artifact("fetch", "git-dates.json", "when each post and media file of the commit was added and last "
                                                "changed: {commit, shallow, commits, files: {path: [created, "
                                                "modified]}}; absent for a folder without history")

# existing: what the project's live revision lets this build reuse
LIVE_REVISION = Artifact("existing", "result/existing.json",
                         "the live revision and its images resized in the bucket: {rev, medias: {sha: [variant]}}")
LIVE_DATABASE = Artifact("existing", "content.sqlite", "the live revision's content.sqlite, when it has one")

# parse: the CONTRACT §3 entries
POST_LINES = Artifact("parse", "result/posts-lines", "post entries in source path order, as JSON lines in parts "
                                                    "(stores/json_lines.py): read them with stages/parsed_posts.py")
POSTS = Artifact("parse", "result/posts.json", "post entries, by source path, as one JSON list: what earlier versions "
                                               "wrote, read when POST_LINES is absent (a job parsed before them)")
MEDIAS = Artifact("parse", "result/medias.json", "media entries, by source path")
GRAPH = Artifact("parse", "result/graph.json", "the link graph of posts and medias")
SOURCE_FILES = Artifact("parse", "result/files-source.json", "the repository's files, as files-source.json lists them")
PROCESSOR_ISSUES = Artifact("parse", "result/processor-issues.json", "parse's issues with their summary")
PARSE_META = Artifact("parse", "result/meta.json", "the repository root inside the tree, post and media counts")

# embed_text: matrices (stores/vectors.py: `<name>.f32` rows beside a `<name>.json` header)
POST_VECTORS = Artifact("embed_text", "result/posts", "one vector per post; header: model, ids (post hashes), slugs")
CHUNK_VECTORS = Artifact("embed_text", "result/chunks", "one vector per passage; header: model, chunks (post, "
                                                        "index, start, end)")

# embed_images
VARIANTS = Artifact("embed_images", "result/variants.json", "the resized variants of each image: {hash: [variant]}")
VARIANTS_IN_BUCKET = Artifact("embed_images", "result/variants-remote.json",
                              "hashes of images whose variants are in the project's bucket already")
MEDIA_VECTORS = Artifact("embed_images", "result/medias", "a matrix: one vector per image; header: model, kind, ids")

# build_db
CONTENT_DB = Artifact("build_db", "content.sqlite", "the bundle's SQLite database (bundle_db/schema.py)")

# enrich
ENRICHMENT = Artifact("enrich", "result/enrichment.json", "backlinks and reading time: {hash: {backlinks, "
                                                          "readingTime}}")
POST_SIMILARITY = Artifact("enrich", "result/posts-similarity.json", "cosine of every pair of posts")
SIMILAR_POSTS = Artifact("enrich", "result/posts-similar-hash.json", "each post's most similar posts")

# publish
BUNDLE = Artifact("publish", "bundle", "the bundle (CONTRACT §3), for a job that uploads it to a bucket")

# upload
FAILED_UPLOAD = Artifact("upload", "result/publish-info-failed.json",
                         "publishInfo of an upload that failed: which files did not make it")

# notify
CALLBACK_PAYLOAD = Artifact("notify", "payload.json",
                            "the callback body of the job's outcome, built once so every retry sends the same bytes")
