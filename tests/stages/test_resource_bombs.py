"""Tier 1: inputs that cost far more than their size — thin images whose resize needs gigabytes, request
fields of tens of megabytes kept in Redis — are refused or moved aside, one issue or one field error each.

The thin PNGs are real files built on the fly (one colour compresses to almost nothing); the resizes that
would exhaust memory run in a child process with a memory limit, so a regression fails the test instead of
the machine.
"""

from __future__ import annotations

import io
import json
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from api.schemas import JobRequest, ProcessRequest, first_error
from pipeline.errors import ItemError, PermanentError
from pipeline.images.clip_input import FULL_RESIZE_MAX_PIXELS, ClipImageConfig, pixel_values
from pipeline.images.decode import MAX_SIDE, check_decodable
from pipeline.images.variants import make_variants
from pipeline.markdown.hashing import file_sha256
from pipeline.models import JobSpec
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.inputs import (
    FIELD_MAX_BYTES,
    OFFLOAD_BYTES,
    FieldTooLarge,
    bounded_fields,
    offload_large_options,
    option_text,
)
from tests.stages.test_embed_images import make_settings, run_job

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
CHILD_MEMORY = 1536 << 20  # address space of the child that tries a resize: far below what the bombs asked for


def thin_png(width: int, height: int) -> bytes:
    """A valid one-colour greyscale PNG of width x height, written row by row so it never exists in memory."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    row = b"\x00" + b"\xc8" * width  # filter byte "none", then the pixels
    packer, parts = zlib.compressobj(9), []
    rows_per_chunk = max(1, (1 << 20) // len(row))
    for start in range(0, height, rows_per_chunk):
        parts.append(packer.compress(row * min(rows_per_chunk, height - start)))
    parts.append(packer.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def tall(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reported file: 1 x 60,000,000 pixels, under the 80 MP cap; ~3 GB to resize."""
    path = tmp_path_factory.mktemp("bombs") / "tall.png"
    path.write_bytes(thin_png(1, 60_000_000))
    with Image.open(path) as img:
        assert img.size == (1, 60_000_000) and img.format == "PNG"
    return path


def wide_png() -> bytes:
    """Its other orientation, made by Pillow: one row of 60,000,000 pixels."""
    buf = io.BytesIO()
    Image.new("L", (60_000_000, 1), 200).save(buf, "PNG")
    return buf.getvalue()


def in_child(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter limited to CHILD_MEMORY of address space."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100,
                          preexec_fn=limit, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1",
                                                           "OMP_NUM_THREADS": "1"}, check=False)


def test_the_tall_png_is_refused_from_its_header(tall: Path) -> None:
    data = tall.read_bytes()
    assert len(data) < 200_000
    for check in (check_decodable, make_variants):
        with pytest.raises(ItemError) as raised:
            check(data, "img/tall.png")
        assert raised.value.path == "img/tall.png" and "too long and thin" in raised.value.reason
    with pytest.raises(ItemError, match="too long and thin"):
        make_variants(wide_png(), "img/wide.png")


def test_the_resize_of_a_thin_image_fits_in_a_bounded_worker(tall: Path) -> None:
    """What killed the worker: make_variants on the tall PNG. Now an ItemError, in far less memory."""
    done = in_child(f"""
from pipeline.errors import ItemError
from pipeline.images.variants import make_variants
try:
    make_variants(open({str(tall)!r}, "rb").read(), "tall.png")
    print("resized")
except ItemError as exc:
    print("refused:", exc.reason)
""")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("refused: image too long and thin"), done.stdout


def test_thin_images_within_the_bound_still_get_every_variant() -> None:
    data = thin_png(2, MAX_SIDE)  # the longest side allowed: resampling it needs at most ~64 MB
    sizes = {v.size_name: (v.width, v.height) for v in make_variants(data, "strip.png")}
    assert sizes["xl"] == (1, 16383)  # capped to WebP's largest side


def test_a_thin_image_is_one_issue_and_published_as_is(tmp_path: Path, tall: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "img").mkdir(parents=True)
    (repo / "img" / "tall.png").write_bytes(tall.read_bytes())
    Image.new("RGB", (640, 480), (10, 120, 200)).save(repo / "img" / "photo.png")
    (repo / "strip.md").write_text("---\ntitle: Strip\n---\n![A strip](img/tall.png)\n", encoding="utf-8")
    (repo / "photo.md").write_text("---\ntitle: Photo\n---\n![A photo](img/photo.png)\n", encoding="utf-8")
    job = run_job(repo, make_settings(tmp_path), "bomb-job", skipEmbeddings=True)
    issues = job.issues_of("img/tall.png")
    assert len(issues) == 1 and issues[0][:2] == ("parse", "media") and "too long and thin" in issues[0][3]
    sha = file_sha256(repo / "img" / "tall.png")
    assert (job.bundle / "_medias" / f"{sha}.png").read_bytes() == (repo / "img" / "tall.png").read_bytes()
    posts = {p["title"]: p for p in json.loads((job.bundle / "posts.json").read_text())}
    assert f"{sha}.png" in posts["Strip"]["html"] and f"{sha}-lg.webp" not in posts["Strip"]["html"]
    photo = file_sha256(repo / "img" / "photo.png")
    assert f"{photo}-lg.webp" in posts["Photo"]["html"] and (job.bundle / "_medias" / f"{photo}-lg.webp").is_file()


def test_clip_input_of_a_thin_strip_resizes_only_what_the_crop_keeps() -> None:
    """A 2 x 40,000 strip resized whole to CLIP's short side would be 224 x 4,480,000 pixels (3 GB)."""
    done = in_child("""
from PIL import Image
from pipeline.images.clip_input import ClipImageConfig, pixel_values
print(pixel_values(Image.new("RGB", (2, 40_000), (200, 30, 30)), ClipImageConfig()).shape)
""")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(3, 224, 224)"


def test_clip_input_by_the_crop_matches_the_whole_resize() -> None:
    rng = np.random.default_rng(7)
    smooth = np.cumsum(rng.integers(-3, 4, (4000, 24, 3)), axis=0) % 256  # a picture, not noise
    img = Image.fromarray(smooth.astype(np.uint8), "RGB")
    cfg = ClipImageConfig()
    assert 224 * (224 * 4000 // 24) > FULL_RESIZE_MAX_PIXELS  # this one takes the crop path
    whole = img.resize((224, 224 * 4000 // 24), cfg.resample)
    top = (whole.height - 224) // 2
    reference = pixel_values(whole.crop((0, top, 224, top + 224)), cfg)
    assert np.abs(pixel_values(img, cfg) - reference).mean() < 0.01


# --------------------------------------------------------------------------- request fields kept in Redis


def test_large_fields_go_to_the_artifact_store_and_read_back(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    brief = "Write about harbours. " * 5000
    blob = {"pages": [{"n": n, "text": "lorem ipsum " * 10} for n in range(1000)]}
    spec = JobSpec(job_id="j", task="process-all", options={"brief": brief, "blob": blob, "domain": "x.org"})
    stored = offload_large_options(spec, store)
    assert stored.options["domain"] == "x.org"
    assert set(stored.options["brief"]) == {"artifact", "bytes"} and stored.options["blob"]["json"] is True
    assert len(stored.model_dump_json()) < 1000
    assert option_text(stored.options["brief"], store, "brief") == brief
    assert option_text(stored.options["blob"], store, "blob") == blob
    assert offload_large_options(spec, store).fingerprint() == stored.fingerprint()  # same body, same job
    with pytest.raises(PermanentError, match="missing"):  # a request cannot name another artifact
        option_text({"artifact": "jobs/other/fetch/tree"}, store, "wpXml")


def test_absurd_fields_are_refused_naming_the_field() -> None:
    with pytest.raises(FieldTooLarge) as raised:
        bounded_fields({"junk": "x" * (FIELD_MAX_BYTES + 1)}, "options")
    assert raised.value.field == "options.junk"
    bounded_fields({"wpXml": "A" * (3 * FIELD_MAX_BYTES)}, "data")  # the export may be as large as the body
    with pytest.raises(FieldTooLarge, match="bytes of small fields"):
        bounded_fields({f"k{n}": "y" * (OFFLOAD_BYTES // 2) for n in range(20)}, "data")
    body = {"task": "process-all", "source": "https://example.org/r.git", "options": {"blob": ["z"] * 1_000_000}}
    with pytest.raises(ValidationError) as invalid:
        JobRequest.model_validate(body)
    bad = first_error(invalid.value, tagged=True)
    assert bad.field == "options.blob" and bad.message.startswith("options.blob is 5,000,000 bytes")
    with pytest.raises(ValidationError) as invalid:
        ProcessRequest.model_validate({"jobId": "p", "task": "process-all", "callbackUrl": "https://cb.example",
                                       "data": {"repoInfo": {"notes": "n" * (2 * FIELD_MAX_BYTES)}}})
    assert "data.repoInfo is" in first_error(invalid.value).message


def test_a_request_cannot_name_a_stored_input_of_another_job() -> None:
    with pytest.raises(ValueError, match=r"options\.wpXml: an object with an `artifact` key"):
        bounded_fields({"wpXml": {"artifact": "inputs/" + "0" * 64, "bytes": 10}}, "options")
    with pytest.raises(ValueError, match=r"data\.brief"):
        bounded_fields({"brief": {"artifact": "inputs/x"}}, "data")
