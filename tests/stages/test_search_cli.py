"""`repobuild search BUNDLE QUERY [--k N] [--images]` on bundles built in-process from a repository with images."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api.cli.main import main
from pipeline.embedders.image import ClipEmbedder
from tests.fakes.clip_model import build_clip_model_dir
from tests.stages.test_embed_images import GOOD, make_settings, needs_clip_vocab, run_job, write_repo

ROOT = Path(__file__).resolve().parents[2]
HIT = re.compile(r"^\s*(\d+)\. (.+?)  \[(.*)\]  score (-?[0-9.]+)$")


@pytest.fixture(autouse=True)
def plain_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads its models from the environment: start from the defaults."""
    for name in ("REPOBUILD_CLIP_MODEL_DIR", "REPOBUILD_TEXT_MODEL_DIR", "REPOBUILD_EMBED_PROVIDER",
                 "REPOBUILD_SKIP_EMBEDDINGS", "SKIP_EMBEDDINGS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repo(tmp_path_factory.mktemp("repo") / "images-repo")


@pytest.fixture(scope="module")
def caption_bundle(tmp_path_factory: pytest.TempPathFactory, repo: Path) -> Path:
    settings = make_settings(tmp_path_factory.mktemp("caption"))
    return run_job(repo, settings, "cap", with_db=True).bundle


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_clip_model_dir(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def clip_bundle(tmp_path_factory: pytest.TempPathFactory, repo: Path, clip_dir: Path) -> Path:
    settings = make_settings(tmp_path_factory.mktemp("clipbundle"), clip_model_dir=str(clip_dir))
    return run_job(repo, settings, "clip", with_db=True).bundle


def search(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[tuple[str, str, float]], str]:
    """Exit code, the hits printed as (title, [slug], score), and stderr."""
    capsys.readouterr()
    code = main(["search", *argv])
    out, err = capsys.readouterr()
    hits = []
    for line in out.splitlines():
        m = HIT.match(line)
        if m:
            hits.append((m.group(2), m.group(3), float(m.group(4))))
    return code, hits, err


def load(path: Path) -> Any:
    return json.loads(path.read_bytes())


def test_images_by_caption(capsys: pytest.CaptureFixture[str], caption_bundle: Path, tmp_path: Path) -> None:
    assert load(caption_bundle / "manifest.json")["models"]["image"]["kind"] == "caption"
    code, hits, err = search(capsys, str(caption_bundle), "a red barn at dawn", "--images")
    assert code == 0, err
    assert hits[0][:2] == ("photo.jpg", "img/photo.jpg"), hits
    assert len(hits) == len(GOOD)  # k defaults to 10: every image with a vector
    assert [h[2] for h in hits] == sorted((h[2] for h in hits), reverse=True)
    code, hits, err = search(capsys, str(caption_bundle), "lighthouse", "--images", "--k", "2")
    assert code == 0, err
    assert len(hits) == 2 and hits[0][1] == "img/rotated.jpg", hits

    # the database alone, without the manifest beside it: the stored model id says it is the text model's
    alone = tmp_path / "copy" / "content.sqlite"
    alone.parent.mkdir()
    shutil.copy2(caption_bundle / "content.sqlite", alone)
    code, hits, err = search(capsys, str(alone), "medical scan", "--images", "--k", "1")
    assert code == 0, err
    assert [h[1] for h in hits] == ["img/depth16.png"]


def test_posts_search_still_works(capsys: pytest.CaptureFixture[str], caption_bundle: Path) -> None:
    code, hits, err = search(capsys, str(caption_bundle), "broken pictures", "--k", "1")
    assert code == 0, err
    assert hits[0][:2] == ("Broken pictures", "broken"), hits


def test_console_script(caption_bundle: Path) -> None:
    script = Path(sys.executable).parent / "repobuild"
    if not script.exists():
        pytest.skip("the repobuild console script is not installed in this environment")
    # the environment is this process's, without the model variables (plain_env)
    proc = subprocess.run([str(script), "search", str(caption_bundle), "traffic light", "--images", "--k", "1"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "[img/anim.gif]" in proc.stdout.splitlines()[0], proc.stdout


@needs_clip_vocab
def test_clip_vectors_need_the_clip_model(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                          clip_bundle: Path, clip_dir: Path, tmp_path: Path) -> None:
    code, hits, err = search(capsys, str(clip_bundle), "a red barn", "--images")
    assert code == 1 and hits == []
    assert "CLIP vectors" in err and "REPOBUILD_CLIP_MODEL_DIR" in err, err

    other = build_clip_model_dir(tmp_path / "other-clip", seed=1)
    monkeypatch.setenv("REPOBUILD_CLIP_MODEL_DIR", str(other))
    code, hits, err = search(capsys, str(clip_bundle), "a red barn", "--images")
    assert code == 1 and "were embedded with the CLIP model tiny-clip@" in err and "other-clip@" in err, err

    # without the manifest, the stored model id matches neither local model
    alone = tmp_path / "copy" / "content.sqlite"
    alone.parent.mkdir()
    shutil.copy2(clip_bundle / "content.sqlite", alone)
    code, hits, err = search(capsys, str(alone), "a red barn", "--images")
    assert code == 1 and "neither this machine's text model nor the configured CLIP model" in err, err


@needs_clip_vocab
def test_images_by_clip(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, clip_bundle: Path,
                        clip_dir: Path, tmp_path: Path) -> None:
    monkeypatch.setenv("REPOBUILD_CLIP_MODEL_DIR", str(clip_dir))
    query = "a photo of a lighthouse"
    code, hits, err = search(capsys, str(clip_bundle), query, "--images", "--k", "4")
    assert code == 0, err
    # the ranking is the CLIP text tower's: cosine of the query's CLIP vector with each image's
    q = ClipEmbedder(clip_dir).embed_texts([query])[0]
    vectors = load(clip_bundle / "media-embedding-hash-map.json")
    paths = {h: p for p, h in load(clip_bundle / "media-path-hash-map.json").items()}
    expected = sorted(((float(np.asarray(v, dtype=np.float32) @ q), paths[h]) for h, v in vectors.items()),
                      reverse=True)[:4]
    assert [h[1] for h in hits] == [p for _, p in expected], (hits, expected)
    for (_, _, score), (cos, _) in zip(hits, expected, strict=True):
        assert abs(score - cos) < 1e-3

    # the database alone, without the manifest beside it: found by the model id
    alone = tmp_path / "copy" / "content.sqlite"
    alone.parent.mkdir()
    shutil.copy2(clip_bundle / "content.sqlite", alone)
    code, hits2, err = search(capsys, str(alone), query, "--images", "--k", "4")
    assert code == 0 and hits2 == hits, err


def test_bundle_without_image_vectors(capsys: pytest.CaptureFixture[str], repo: Path, tmp_path: Path) -> None:
    bundle = run_job(repo, make_settings(tmp_path), "skip", with_db=True, skipEmbeddings=True).bundle
    code, hits, err = search(capsys, str(bundle), "red barn", "--images")
    assert code == 1 and "has no image vectors" in err, err
    code, hits, err = search(capsys, str(bundle), "gallery")  # keywords still work
    assert code == 0 and hits[0][1] == "gallery", (hits, err)
    code, hits, err = search(capsys, str(tmp_path / "nowhere"), "x", "--images")
    assert code == 1 and "does not exist" in err
