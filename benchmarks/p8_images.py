"""P8: the `_medias/` variants (xs..xl webp) per source image, all workers together, on 2 pool processes.

The real system: a private Redis, the API in a thread, one worker with 2 prefork processes (benchmarks/harness.py),
a process-all job over `POST /jobs` per corpus, each on a fresh artifact store (a cold variant cache). Embeddings
are off unless `--embeddings`, so embed_images does only what P8 is about: decode, resize, encode. Per corpus:
- wall s/image: embed_images' wall time (first start to done: plan, batches, assemble) / images resized;
- batches s/image: its batch tasks, first start to last end (from the worker's log) / images;
- CPU s/image: CPU seconds the worker processes used while the stage ran / images.
Corpora: "guide" is the English posts of opensource-guide with their images; "xN" is that plus the rasters of til,
each file copied N times under other names with a few bytes appended (distinct hashes, the same pixels), because
the real corpora hold too few images to keep two processes busy for long.

A pure in-process microbenchmark of `make_variants` (CPU s/image on the same rasters) follows, with the choices
it is made of measured side by side: resizing each size from the source or from the previous size, webp `method`
0-6 (time and bytes), and JPEG draft decoding on a 6000-px JPEG (a real til screenshot upscaled: the corpora hold
no photo large enough for draft mode to apply).

    python -m benchmarks.p8_images [--corpora guide,x4] [--no-micro] [--embeddings] [--keep]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageStat

from benchmarks.cpu_use import cpu_now
from benchmarks.guide_corpus import CORPORA, english_corpus
from benchmarks.harness import JOB_TIMEOUT_S, Harness, batch_spans_between, discard
from benchmarks.targets import Row, table
from pipeline.images.decode import DecodedImage, open_image
from pipeline.images.variants import WEBP_METHOD, WEBP_QUALITY, largest_size, make_variants, resized, target_sizes
from pipeline.models import JobStatus, StageStatus
from pipeline.plans import job_is_over
from pipeline.settings import Settings

LIMIT_S = 0.2  # issue 12: ≤ 0.2 s per image, all workers together, on 2 cores
RASTERS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})
POLL_S = 0.02
STAGE = "embed_images"


def rasters(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in RASTERS and ".git" not in p.parts and p.is_file())


def distinct_copy(data: bytes, k: int) -> bytes:
    """The same picture under another hash: decoders stop at the image's end marker and ignore what follows."""
    return data + f"\ncopy {k}\n".encode()


def image_corpus(dest: Path, copies: int) -> Path:
    """The English opensource-guide posts and images, til's rasters beside them, every raster `copies` times."""
    english_corpus(dest)
    til = CORPORA / "til"
    for src in rasters(til):
        target = dest / "assets" / "images" / "til" / src.relative_to(til)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    originals = rasters(dest / "assets")
    for k in range(1, copies):
        for src in originals:
            target = dest / "assets" / f"copy-{k}" / src.relative_to(dest / "assets")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(distinct_copy(src.read_bytes(), k))
    return dest


def make_corpus(name: str, root: Path) -> Path:
    if name == "guide":
        return english_corpus(root / name)[0]
    if name.startswith("x") and name[1:].isdigit():
        return image_corpus(root / name, int(name[1:]))
    raise SystemExit(f"unknown corpus {name!r}: guide or xN (e.g. x4)")


def run_job(harness: Harness, label: str, corpus: Path) -> dict[str, Any]:
    """One process-all job over HTTP; embed_images' wall, batch span and worker CPU, per image."""
    assert harness.client is not None and harness.store is not None
    workers = {w.proc.pid for w in harness.workers if w.proc is not None}
    job_id = f"p8-{label}-{time.time_ns()}"
    resp = harness.client.post("/jobs", json={"task": "process-all", "source": str(corpus), "job_id": job_id})
    if resp.status_code != 202:
        raise RuntimeError(f"POST /jobs answered {resp.status_code}: {resp.text}")
    deadline = time.monotonic() + JOB_TIMEOUT_S
    cpu0 = cpu1 = None
    self0 = self1 = 0.0
    while True:
        job = harness.store.get(job_id)
        status = job.stage(STAGE).status
        if cpu0 is None and status != StageStatus.PENDING:
            cpu0, self0 = cpu_now(workers), time.process_time()
        if cpu0 is not None and cpu1 is None and status in (StageStatus.DONE, StageStatus.FAILED):
            cpu1, self1 = cpu_now(workers), time.process_time()
        if job_is_over(job):
            break
        if not all(w.alive() for w in harness.workers):
            raise RuntimeError(f"a worker process exited during {label}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not finish within {JOB_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)
    if job.status != JobStatus.COMPLETED:
        raise RuntimeError(f"job {job_id} {job.status.value}: {job.error}")
    stage = job.stage(STAGE)
    start, end = stage.started_at or 0.0, stage.finished_at or 0.0
    spans = [s for w in harness.workers for s in batch_spans_between(w.log_path, start, end)]
    images = int(stage.summary.get("processed") or 0)
    # cpu_now counts this process too (the API thread, this loop): take it out, leaving the worker's processes.
    cpu_s = (cpu1.ours - cpu0.ours - (self1 - self0)) if cpu0 is not None and cpu1 is not None else 0.0
    span = (max(e for _, e in spans) - min(s for s, _ in spans)) if spans else 0.0
    per = max(images, 1)
    return {"corpus": label, "job_id": job_id, "images": images, "batches": int(stage.summary.get("batches") or 0),
            "failed": int(stage.summary.get("failed") or 0), "stage_wall_s": round(end - start, 2),
            "batch_span_s": round(span, 2), "batch_task_s": round(sum(e - s for s, e in spans), 2),
            "cpu_s": round(cpu_s, 2), "wall_s_per_image": round((end - start) / per, 4),
            "batches_s_per_image": round(span / per, 4), "cpu_s_per_image": round(cpu_s / per, 4),
            "load": os.getloadavg()}


def _cpu(fn: Callable[[], object], repeat: int = 1) -> float:
    t = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - t) / repeat


def _from_source(src: Image.Image) -> list[Image.Image]:
    """Every distinct size, each resized from the whole source: the reference picture."""
    out: dict[tuple[int, int], Image.Image] = {}
    for _, w, h in reversed(target_sizes(src.width, src.height)):
        if (w, h) not in out:
            out[(w, h)] = src if (w, h) == src.size else src.resize((w, h), Image.Resampling.LANCZOS)
    return list(out.values())


def _chained(decoded: DecodedImage) -> list[Image.Image]:
    """Every distinct size as make_variants resizes them (each from the previous)."""
    out: dict[tuple[int, int], Image.Image] = {}
    for _, img in resized(decoded):
        out.setdefault(img.size, img)
    return list(out.values())


def _diff(a: Image.Image, b: Image.Image) -> tuple[int, float]:
    """The largest and the mean difference of a channel, in levels of 255; colour under alpha 0 is not seen, so
    RGBA is compared premultiplied (as Pillow resizes it)."""
    if a.mode == "RGBA":
        a, b = a.convert("RGBa"), b.convert("RGBa")
    d = ImageChops.difference(a, b)
    extrema: list[tuple[int, int]] = list(d.getextrema())  # type: ignore[arg-type]
    return max(hi for _, hi in extrema), sum(ImageStat.Stat(d).mean) / len(extrema)


def _compare(reference: list[Image.Image], other: list[Image.Image]) -> dict[str, float]:
    diffs = [_diff(a, b) for a, b in zip(reference, other, strict=True)]
    return {"max": max(m for m, _ in diffs), "mean": round(sum(m for _, m in diffs) / len(diffs), 3)}


def big_jpeg() -> bytes:
    """A 6000-px JPEG: a real til screenshot upscaled ×3, for the draft-mode figure."""
    src = Image.open(CORPORA / "til" / "firefox" / "search-across-all-resources.jpg").convert("RGB")
    buf = io.BytesIO()
    src.resize((src.width * 3, src.height * 3), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def micro(repeat: int = 1) -> dict[str, Any]:
    """make_variants per image in this process, and the choices it is made of, on the real rasters."""
    files = [*rasters(CORPORA / "opensource-guide"), *rasters(CORPORA / "til")]
    data = [(p.name, p.read_bytes()) for p in files]
    n = len(data)
    out: dict[str, Any] = {"images": n, "load": os.getloadavg()}
    out["make_variants_s_per_image"] = round(_cpu(lambda: [make_variants(d, name) for name, d in data], repeat) / n, 4)
    out["variant_bytes"] = sum(v.nbytes for name, d in data for v in make_variants(d, name))
    decoded = [open_image(d, name) for name, d in data]
    out["decode_s_per_image"] = round(_cpu(lambda: [open_image(d, name) for name, d in data], repeat) / n, 4)
    # Resizing from the source each time is the reference picture; chained must stay within a few levels of it.
    out["resize_from_source_s_per_image"] = round(_cpu(lambda: [_from_source(s.image) for s in decoded]) / n, 4)
    out["resize_chained_s_per_image"] = round(_cpu(lambda: [_chained(s) for s in decoded]) / n, 4)
    out["chained_vs_source_levels"] = _compare([im for s in decoded for im in _from_source(s.image)],
                                               [im for s in decoded for im in _chained(s)])
    sized = [im for s in decoded for im in _chained(s)]
    methods = {}
    for method in range(7):
        def encode(m: int = method) -> int:
            total = 0
            for im in sized:
                buf = io.BytesIO()
                im.save(buf, "WEBP", quality=WEBP_QUALITY, method=m)
                total += len(buf.getvalue())
            return total
        methods[method] = {"s_per_image": round(_cpu(encode) / n, 4), "bytes": encode()}
    out["webp_method"] = methods
    out["webp_method_used"] = WEBP_METHOD
    big = big_jpeg()
    w, h = Image.open(io.BytesIO(big)).size
    xl = largest_size(w, h)

    def decode_full() -> None:
        Image.open(io.BytesIO(big)).load()

    def decode_draft() -> None:
        im = Image.open(io.BytesIO(big))
        im.draft("RGB", xl)
        im.load()

    out["big_jpeg"] = {"size": [w, h], "full_decode_s": round(_cpu(decode_full, 3), 4),
                       "draft_decode_s": round(_cpu(decode_draft, 3), 4),
                       "make_variants_s": round(_cpu(lambda: make_variants(big, "big.jpg"), 3), 4)}
    return out


def micro_report(m: dict[str, Any]) -> str:
    lines = [f"\nin-process, {m['images']} rasters of opensource-guide and til (load {m['load'][0]:.2f}):",
             f"  make_variants {m['make_variants_s_per_image']:.4f} CPU s/image ({m['variant_bytes']:,} bytes); "
             f"decode alone {m['decode_s_per_image']:.4f}",
             f"  resize every size from the source {m['resize_from_source_s_per_image']:.4f} s/image, each from the "
             f"previous {m['resize_chained_s_per_image']:.4f} (difference of a channel: largest "
             f"{m['chained_vs_source_levels']['max']}, mean {m['chained_vs_source_levels']['mean']} of 255)",
             f"  webp encode of those sizes, quality {WEBP_QUALITY}, by method (used: {m['webp_method_used']}):"]
    for method, r in m["webp_method"].items():
        lines.append(f"    method {method}: {r['s_per_image']:.4f} s/image, {r['bytes']:,} bytes")
    b = m["big_jpeg"]
    lines.append(f"  {b['size'][0]}x{b['size'][1]} JPEG: full decode {b['full_decode_s']:.3f} s, draft at xl "
                 f"{b['draft_decode_s']:.3f} s; make_variants {b['make_variants_s']:.3f} s")
    return "\n".join(lines)


def measure(corpora: str = "guide,x4", concurrency: int = 2, embeddings: bool = False, with_micro: bool = True,
            keep: bool = False) -> Row:
    root = Path(tempfile.mkdtemp(prefix="repobuild-p8-"))
    base = Settings.from_env().with_(redis_url=None, local_source_roots=(str(root),), skip_embeddings=not embeddings)
    harness = Harness(root, base)
    runs: list[dict[str, Any]] = []
    try:
        harness.start()
        for name in corpora.split(","):
            corpus = make_corpus(name, root / "corpora")
            settings = harness.settings(root / f"artifacts-{name}")  # a store of its own: the variant cache is cold
            harness.stop_workers()
            harness.start_worker(settings, concurrency=concurrency)
            runs.append(run_job(harness, name, corpus))
            print(json.dumps(runs[-1]), flush=True)
    finally:
        harness.close()
        discard(root, keep)
    largest = max(runs, key=lambda r: r["images"])
    per = largest["wall_s_per_image"]
    measured = "; ".join(f"{r['corpus']} {r['wall_s_per_image']:.3f} s ({r['images']} images; batches "
                         f"{r['batches_s_per_image']:.3f}, CPU {r['cpu_s_per_image']:.3f})" for r in runs)
    details: dict[str, Any] = {"runs": runs, "concurrency": concurrency, "embeddings": embeddings}
    if with_micro:
        details["micro"] = micro()
    return Row("P8", f"image variants (xs..xl webp), s per source image, {concurrency} worker processes, "
                     "embed_images wall / images", f"≤ {LIMIT_S} s", measured, per / LIMIT_S, per <= LIMIT_S, details)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", default="guide,x4", help="comma-separated: guide, xN (N copies of every raster)")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--embeddings", action="store_true", help="caption (or CLIP) vectors too, as a default job")
    ap.add_argument("--no-micro", action="store_true", help="skip the in-process microbenchmark")
    ap.add_argument("--micro-only", action="store_true", help="only the in-process microbenchmark (no services)")
    ap.add_argument("--keep", action="store_true", help="keep the runs' folder (bundles, worker logs)")
    args = ap.parse_args(argv)
    if args.micro_only:
        print(micro_report(micro()))
        return 0
    row = measure(args.corpora, args.concurrency, args.embeddings, not args.no_micro, args.keep)
    print("\n" + table([row]))
    if "micro" in row.details:
        print(micro_report(row.details["micro"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
