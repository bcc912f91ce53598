"""Tier 1: the real MiniLM, the embed_text and enrich stages in-process, search on a real corpus."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.bundle_db.search import search_posts
from pipeline.catalog import job_key
from pipeline.embedders.text import load_text_embedder
from pipeline.models import JobSpec, SourceSpec
from pipeline.settings import Settings
from pipeline.stages import build_db, embed_text, enrich, parse
from pipeline.stages.context import LocalContext, run_to_end
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.vectors import read_matrix
from tests.conftest import CORPORA, DEMO_REPO


def test_paraphrases_score_above_unrelated() -> None:
    e = load_text_embedder()
    pairs = [
        ("How do I contribute to an open source project?", "What is the way to start contributing to open source?"),
        ("The cat is sleeping on the sofa.", "A cat naps on the couch."),
        ("Deploy the web app with Docker.", "Ship the website in a container using Docker."),
    ]
    unrelated = [
        ("How do I contribute to an open source project?", "The recipe needs two eggs and flour."),
        ("The cat is sleeping on the sofa.", "Interest rates rose by half a point."),
        ("Deploy the web app with Docker.", "Penguins live in the southern hemisphere."),
    ]

    def cos(a: str, b: str) -> float:
        va, vb = e.embed([a, b])
        return float(va @ vb)

    para = [cos(a, b) for a, b in pairs]
    other = [cos(a, b) for a, b in unrelated]
    assert min(para) > 0.5 > 0.25 > max(other)
    v = e.embed(["x" * 5000])  # truncated at 256 tokens, still one normalised vector
    assert v.shape == (1, 384) and abs(float(np.linalg.norm(v[0])) - 1) < 1e-5


def _run(stage_run: object, ctx_args: dict[str, object], stage: str, **extra: object) -> LocalContext:
    ctx = LocalContext(stage=stage, **ctx_args, **extra)  # type: ignore[arg-type]
    run_to_end(stage_run, ctx)  # type: ignore[arg-type]
    return ctx


def build_job(tmp_path: Path, source: Path, job_id: str, artifacts: LocalArtifactStore,
              settings: Settings) -> dict[str, object]:
    spec = JobSpec(job_id=job_id, task="process-all", source=SourceSpec(path=str(source)))
    shutil.copytree(source, artifacts.path(job_key(job_id, "fetch", "tree")))
    args: dict[str, object] = {"job_id": job_id, "spec": spec, "settings": settings, "artifacts": artifacts}
    _run(parse.run, args, "parse", batch_fn=parse.run_batch)
    ctx = _run(embed_text.run, args, "embed_text", batch_fn=embed_text.run_batch)
    return {"args": args, "embed": ctx}


def test_embed_text_cache_and_enrich(tmp_path: Path) -> None:
    settings = Settings(artifacts=str(tmp_path / "a"), output=str(tmp_path / "o"), temp_dir=str(tmp_path))
    artifacts = LocalArtifactStore(settings.artifacts)
    first = build_job(tmp_path, DEMO_REPO, "j1", artifacts, settings)
    vecs, header = read_matrix(artifacts, job_key("j1", "embed_text", "result/posts"))
    assert vecs.shape == (9, 384) and len(header["ids"]) == 9
    chunks, cheader = read_matrix(artifacts, job_key("j1", "embed_text", "result/chunks"))
    assert chunks.shape[0] == len(cheader["chunks"]) >= 9
    summary1 = artifacts.get_json(job_key("j1", "embed_text", "inputs.json"))
    assert summary1["cached"] == 0 and summary1["embedded"] > 0

    # same repository again, one post edited: only that post's inputs are embedded
    edited = tmp_path / "edited"
    shutil.copytree(DEMO_REPO, edited)
    target = edited / "guides" / "setup.md"
    target.write_text(target.read_text() + "\n\nOne more paragraph about lighthouses.\n")
    build_job(tmp_path, edited, "j2", artifacts, settings)
    plan2 = artifacts.get_json(job_key("j2", "embed_text", "inputs.json"))
    assert 1 <= plan2["embedded"] <= 4  # the post vector and its changed passage(s)
    assert plan2["cached"] == len(plan2["items"]) - plan2["embedded"]

    args = first["args"]
    _run(enrich.run, args, "enrich")  # type: ignore[arg-type]
    top = artifacts.get_json(job_key("j1", "enrich", "result/posts-similar-hash.json"))
    sims = artifacts.get_json(job_key("j1", "enrich", "result/posts-similarity.json"))
    assert len(top) == 9 and all(len(v) == 8 for v in top.values())
    assert len(sims) == 9 * 8 // 2 and all(a < b for a, b in (k.split("-") for k in sims))
    ranked = top[header["ids"][0]]
    scores = [sims["-".join(sorted((header["ids"][0], h)))] for h in ranked]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.timeout(600)
def searchable(tmp_path: Path, source: Path, job_id: str, settings: Settings) -> Callable[..., list[Any]]:
    """Parse, embed and build the database of `source`; returns `search(query, k)` over it with MiniLM."""
    artifacts = LocalArtifactStore(settings.artifacts)
    job = build_job(tmp_path, source, job_id, artifacts, settings)
    _run(build_db.run, job["args"], "build_db")  # type: ignore[arg-type]
    db = tmp_path / "content.sqlite"
    db.write_bytes(artifacts.get_bytes(job_key(job_id, "build_db", "content.sqlite")))
    e = load_text_embedder()

    def search(query: str, k: int = 5, vectors: bool = True) -> list[Any]:
        return search_posts(db, query, k=k, embed=(lambda t: e.embed([t])[0]) if vectors else None)

    return search


def test_search_finds_expected_post_on_corpus(tmp_path: Path) -> None:
    corpus = tmp_path / "guide"
    (corpus / "_articles").mkdir(parents=True)
    for md in (CORPORA / "opensource-guide" / "_articles").glob("*.md"):  # the English posts
        shutil.copy2(md, corpus / "_articles" / md.name)
    settings = Settings(artifacts=str(tmp_path / "a"), output=str(tmp_path / "o"), temp_dir=str(tmp_path),
                        embed_batch=16)
    search = searchable(tmp_path, corpus, "g1", settings)
    hits = search("enforcing a code of conduct")
    assert hits and hits[0].slug == "code-of-conduct", [h.slug for h in hits]
    hits = search("getting paid for open source work")
    assert "getting-paid" in [h.slug for h in hits[:3]], [h.slug for h in hits]
    # a question whose words are not the post's words: the vectors carry it
    hits = search("how should a project decide who gets commit access")
    assert "leadership-and-governance" in [h.slug for h in hits[:3]], [h.slug for h in hits]


def test_search_on_the_demo_stems_and_embeds_the_bare_query(tmp_path: Path) -> None:
    settings = Settings(artifacts=str(tmp_path / "a"), output=str(tmp_path / "o"), temp_dir=str(tmp_path))
    search = searchable(tmp_path, DEMO_REPO, "d1", settings)
    hits = search("how do I deploy", k=3)
    assert hits[0].slug == "deploy", [h.slug for h in hits]
    # without vectors, bm25 alone: "deploy" matches "Deploying" through the porter stemmer
    assert "deploy" in [h.slug for h in search("deploy", k=3, vectors=False)]


def test_token_counts_see_past_the_model_window_so_long_posts_get_many_passages() -> None:
    from pipeline.embedders.chunks import chunk_text
    from pipeline.embedders.text import load_text_embedder

    model = load_text_embedder(None, threads=1)
    long_text = "\n\n".join(f"Paragraph {i} explains one more idea about open source maintainers." for i in range(200))
    assert len(model.tokens(long_text)) > 2000
    chunks = chunk_text(long_text, lambda t: len(model.tokens(t)), 256)
    assert len(chunks) >= 8 and all(len(model.tokens(c.text)) <= 256 for c in chunks)


def test_span_counts_from_one_encoding_chunk_every_corpus_post_as_counting_each_span_does() -> None:
    """The fast counter must cut exactly the chunks the per-span counter cuts: headings, over-long paragraphs
    split on sentences and then words, punctuation glued to words, non-Latin scripts."""
    from pipeline.embedders.chunks import chunk_text

    model = load_text_embedder(None, threads=1)

    def count(t: str) -> int:
        return len(model.tokens(t))

    posts = sorted((CORPORA / "opensource-guide" / "_articles").rglob("*.md"))[::15]
    texts = [p.read_text(encoding="utf-8").strip() for p in posts]
    texts.append("Heading\n\n" + " ".join(f"Word{i}, e.g. (x{i}.y{i})! 開源{i}。" for i in range(400)))
    assert len(texts) > 20
    for text in texts:
        spans = model.span_counter(text)
        assert spans is not None
        fast = chunk_text(text, count, 256, headings=["Heading"], span_tokens=spans)
        assert fast == chunk_text(text, count, 256, headings=["Heading"])
        assert len(fast) >= 1


def test_embed_text_stage_on_an_openai_compatible_server_with_a_429(tmp_path: Path) -> None:
    """The second provider through the real stage: batches, a 429 honoured, the cache on a second job."""
    from tests.fakes.openai_server import OpenAIServer

    with OpenAIServer(api_key="sk-test") as server:
        server.fail_next(429, retry_after="1")
        settings = Settings(artifacts=str(tmp_path / "a"), temp_dir=str(tmp_path), embed_provider="openai",
                            openai_base_url=server.base_url, openai_api_key="sk-test",
                            openai_embed_model="text-embedding-3-small", openai_dimensions=64, embed_batch=16)
        artifacts = LocalArtifactStore(tmp_path / "artifacts")
        job = build_job(tmp_path, DEMO_REPO, "oa-1", artifacts, settings)
        ctx = job["embed"]
        assert isinstance(ctx, LocalContext)
        vectors, header = read_matrix(artifacts, job_key("oa-1", "embed_text", "result/posts"))
        assert header["model"] == "openai:text-embedding-3-small@64" and vectors.shape[1] == 64
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        calls = server.requests_to("/v1/embeddings")
        plan = artifacts.get_json(job_key("oa-1", "embed_text", "inputs.json"))
        # one request per batch, plus the one answered 429 and sent again after its Retry-After
        assert len(calls) == plan["batches"] + 1 and calls[0].body == calls[1].body
        assert calls[1].at - calls[0].at >= 0.9
        assert all(len(c.body["input"]) <= 16 for c in calls)

        # the same repository again: every vector from the cache, not one request more
        before = len(server.requests_to("/v1/embeddings"))
        again = build_job(tmp_path, DEMO_REPO, "oa-2", artifacts, settings)["embed"]
        assert isinstance(again, LocalContext)
        assert len(server.requests_to("/v1/embeddings")) == before
        plan = artifacts.get_json(job_key("oa-2", "embed_text", "inputs.json"))
        assert plan["embedded"] == 0 and plan["cached"] == len(plan["items"])
