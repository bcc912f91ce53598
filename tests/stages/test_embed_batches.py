"""Tier 1: embed_text's batches chunk their own posts, a post longer than a batch in pieces, and a plan that knows
every post's passages (the span cache) and finds every vector cached sends no batch at all."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from pipeline.catalog import CHUNK_VECTORS, POST_VECTORS, job_key
from pipeline.models import JobSpec, SourceSpec
from pipeline.settings import Settings
from pipeline.stages import embed_text, parse
from pipeline.stages.context import LocalContext, run_to_end
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.vectors import read_matrix
from tests.conftest import CORPORA, DEMO_REPO


def _build(tmp_path: Path, job_id: str, settings: Settings, source: Path = DEMO_REPO) -> LocalContext:
    artifacts = LocalArtifactStore(settings.artifacts)
    spec = JobSpec(job_id=job_id, task="process-all", source=SourceSpec(path=str(source)))
    shutil.copytree(source, artifacts.path(job_key(job_id, "fetch", "tree")))
    args = {"job_id": job_id, "spec": spec, "settings": settings, "artifacts": artifacts}
    run_to_end(parse.run, LocalContext(stage="parse", batch_fn=parse.run_batch, **args))  # type: ignore[arg-type]
    ctx = LocalContext(stage="embed_text", batch_fn=embed_text.run_batch, **args)  # type: ignore[arg-type]
    run_to_end(embed_text.run, ctx)
    return ctx


def _settings(tmp_path: Path, name: str, embed_batch: int) -> Settings:
    return Settings(artifacts=str(tmp_path / name), output=str(tmp_path / "o"), temp_dir=str(tmp_path),
                    embed_batch=embed_batch)


def _matrices(settings: Settings, job_id: str) -> list[tuple[np.ndarray, dict[str, object]]]:
    artifacts = LocalArtifactStore(settings.artifacts)
    return [read_matrix(artifacts, a.key(job_id)) for a in (POST_VECTORS, CHUNK_VECTORS)]


def test_posts_cut_in_pieces_give_the_vectors_of_whole_posts(tmp_path: Path) -> None:
    source = tmp_path / "repo"
    shutil.copytree(DEMO_REPO, source)
    # a post of ~40 passages: more than a batch of 4, cut in pieces by a guess the last piece corrects
    article = (CORPORA / "opensource-guide" / "_articles" / "starting-a-project.md").read_text(encoding="utf-8")
    (source / "guides" / "long.md").write_text("# A long guide\n\n" + article.split("---", 2)[2], encoding="utf-8")
    small, large = _settings(tmp_path, "small", 4), _settings(tmp_path, "large", 512)
    _build(tmp_path, "j", small, source)
    _build(tmp_path, "j", large, source)
    artifacts = LocalArtifactStore(small.artifacts)
    plan = artifacts.get_json(job_key("j", "embed_text", "plan.json"))
    pieces = [p for n in range(plan["batches"])
              for p in artifacts.get_json(job_key("j", "embed_text", f"batches/{n:05d}.json"))["posts"]]
    cut = {p["hash"] for p in pieces if p["first"] > 0}
    assert len(cut) == 1 and len([p for p in pieces if p["hash"] in cut]) > 5
    assert LocalArtifactStore(large.artifacts).get_json(job_key("j", "embed_text", "plan.json"))["batches"] == 1
    for (a, ha), (b, hb) in zip(_matrices(small, "j"), _matrices(large, "j"), strict=True):
        assert ha == hb and np.array_equal(a, b)
    inputs = artifacts.get_json(job_key("j", "embed_text", "inputs.json"))
    chunks = [i for i in inputs["items"] if i["kind"] == "chunk"]
    for post in cut:  # every passage of a cut post once, in order
        assert [i["index"] for i in chunks if i["post"] == post] == list(range(sum(i["post"] == post for i in chunks)))


def test_a_rebuild_with_every_vector_cached_sends_no_batch_and_a_lost_span_cache_only_rechunks(
        tmp_path: Path) -> None:
    settings = _settings(tmp_path, "a", 8)
    first = _build(tmp_path, "j1", settings)
    assert first.done_batches
    again = _build(tmp_path, "j2", settings)
    artifacts = LocalArtifactStore(settings.artifacts)
    inputs = artifacts.get_json(job_key("j2", "embed_text", "inputs.json"))
    assert (inputs["batches"], inputs["embedded"], inputs["cached"]) == (0, 0, len(inputs["items"]))
    assert not again.done_batches
    for (a, ha), (b, hb) in zip(_matrices(settings, "j1"), _matrices(settings, "j2"), strict=True):
        assert ha == hb and np.array_equal(a, b)

    # the span cache lost, one entry garbled: the posts are chunked again in batches, nothing is embedded
    spans = sorted(Path(settings.artifacts, "cache", "chunks").rglob("*.json"))
    spans[0].write_text('[[0, 5], [3')
    for path in spans[1:]:
        path.unlink()
    _build(tmp_path, "j3", settings)
    inputs = artifacts.get_json(job_key("j3", "embed_text", "inputs.json"))
    assert inputs["batches"] > 0 and inputs["embedded"] == 0
    for (a, ha), (b, hb) in zip(_matrices(settings, "j1"), _matrices(settings, "j3"), strict=True):
        assert ha == hb and np.array_equal(a, b)


def test_without_fan_out_a_stage_runs_its_own_batches_to_the_same_outputs(tmp_path: Path) -> None:
    fanned, serial = _settings(tmp_path, "fanned", 4), _settings(tmp_path, "serial", 4).with_(fan_out=False)
    _build(tmp_path, "j", fanned)
    ctx = _build(tmp_path, "j", serial)
    assert not ctx.done_batches and ctx.cursor is not None and ctx.cursor["next"] == ctx.cursor["batches"] > 1
    for (a, ha), (b, hb) in zip(_matrices(fanned, "j"), _matrices(serial, "j"), strict=True):
        assert ha == hb and np.array_equal(a, b)
    one, other = (LocalArtifactStore(s.artifacts) for s in (fanned, serial))
    parsed = sorted(p.relative_to(one.path("jobs/j/parse")) for p in one.path("jobs/j/parse").rglob("*") if p.is_file())
    assert parsed and all(one.path(f"jobs/j/parse/{p}").read_bytes() == other.path(f"jobs/j/parse/{p}").read_bytes()
                          for p in parsed)
