"""The bare embedding floor on the cores the worker has: N processes of T onnxruntime threads, as N pool processes.

The stage's own work, read back from its batch files, in its order: embed_text's batches (the texts it embedded,
REPOBUILD_EMBED_BATCH each), then embed_images' batches — through the CLIP vision model (the pipeline's decode and
CLIP preprocessing, then one onnxruntime run) when the job had one, else the image captions through the text model,
as the stage embeds them. Each process loads its model first (not timed); then all start together and take batches
from one queue until it is empty, as pool processes take batch tasks. The floor is the time from that start until
the last process is done: no Celery, no Redis, no artifact store, no chunking, no resizing.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.floor import PlainTextModel, Vectors
from benchmarks.harness import Run
from pipeline.catalog import PARSE_META, SOURCE_TREE, job_key
from pipeline.settings import Settings
from pipeline.stages.embed_text import embedded_texts
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.vectors import VectorCache, text_key

READY_TIMEOUT_S = 120.0
Task = tuple[str, int, list[str]]  # ("text" | "image", batch number, texts or image file paths)


@dataclass
class FloorWork:
    """What the stages embedded: text batches (embed_text, then captions) and image batches (file paths)."""

    text: list[list[str]] = field(default_factory=list)
    images: list[list[str]] = field(default_factory=list)
    clip_model_dir: str | None = None

    def tasks(self) -> list[Task]:
        return ([("text", n, b) for n, b in enumerate(self.text)]
                + [("image", n, b) for n, b in enumerate(self.images)])


@dataclass
class PoolFloor:
    processes: int
    threads: int
    seconds: float
    busy_s: list[float]  # CPU seconds of each process between the start and its end
    texts: int
    images: int
    tokens: int
    padded: int
    text_vectors: list[Vectors]  # per text batch, in batch order
    image_vectors: list[Vectors]


def work_of(settings: Settings, run: Run) -> FloorWork:
    """The stage's work in a finished job, from the batch files embed_text and embed_images wrote."""
    artifacts = LocalArtifactStore(settings.artifacts)
    job = run.job.spec.job_id
    work = FloorWork(clip_model_dir=settings.clip_model_dir)
    for n in range(int(run.plan["batches"])):
        work.text.append(embedded_texts(settings, artifacts, job, n))
    images = artifacts.get_json(job_key(job, "embed_images", "plan.json"))
    vectors = images.get("vectors") or {}
    root = artifacts.tree(SOURCE_TREE.key(job)) / str(artifacts.get_json(PARSE_META.key(job)).get("root") or "")
    seen: set[str] = set()
    for n in range(int(run.job.stage("embed_images").summary.get("batches") or 0)):
        items = artifacts.get_json(job_key(job, "embed_images", f"batches/{n:05d}.json"))["items"]
        if vectors.get("kind") == "clip":
            work.images.append([str(root / str(i["path"])) for i in items])
        elif vectors:
            # as the stage does: a caption already embedded (by an earlier batch) is not embedded again
            fresh = [str(i["caption"]) for i in items if text_key(str(i["caption"])) not in seen]
            seen.update(text_key(c) for c in fresh)
            if fresh:
                work.text.append(fresh)
    return work


def _child(settings: Settings, threads: int, clip_dir: str | None, tasks: Any, results: Any, go: Any) -> None:
    text = PlainTextModel(settings, threads)
    vision = _PlainVision(Path(clip_dir), threads) if clip_dir else None
    results.put(("ready", 0, None, 0, 0))
    go.wait()
    c0 = time.process_time()
    while (task := tasks.get()) is not None:
        kind, n, batch = task
        if kind == "text":
            vecs, real, padded = text.embed(batch)
            results.put(("text", n, vecs, real, padded))
        else:
            assert vision is not None
            results.put(("image", n, vision.embed(batch), 0, 0))
    results.put(("done", 0, (time.monotonic(), time.process_time() - c0), 0, 0))


class _PlainVision:
    """The CLIP vision tower in a plain onnxruntime session, fed the pipeline's own decode and preprocessing."""

    def __init__(self, root: Path, threads: int) -> None:
        import json

        import onnxruntime as ort

        from pipeline.embedders.image import find_model_file
        from pipeline.images.clip_input import ClipImageConfig

        self.config = ClipImageConfig.from_json(json.loads((root / "preprocessor_config.json").read_text()))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(find_model_file(root, "vision_model")), sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        out = self.session.get_outputs()
        self.output = next((o.name for o in out if o.name == "image_embeds"), out[0].name)

    def embed(self, paths: list[str]) -> Vectors:
        from pipeline.images.clip_input import pixel_values
        from pipeline.images.decode import DEFAULT_MAX_PIXELS, open_image

        pixels = [pixel_values(open_image(Path(p).read_bytes(), p, DEFAULT_MAX_PIXELS).image, self.config)
                  for p in paths]
        x = np.asarray(self.session.run([self.output], {self.input: np.stack(pixels)})[0], dtype=np.float32)
        out: Vectors = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
        return out


def pool_floor(work: FloorWork, settings: Settings, processes: int, threads: int) -> PoolFloor:
    """Run `work` in `processes` fresh processes of `threads` threads each (see the module docstring)."""
    ctx = mp.get_context("spawn")  # nothing of this process (its threads, its sessions) leaks into the floor's
    tasks, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_child, args=(settings, threads, work.clip_model_dir, tasks, results, go),
                         daemon=True) for _ in range(processes)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            if results.get(timeout=READY_TIMEOUT_S)[0] != "ready":
                raise RuntimeError("a floor process failed to load its model")
        for task in work.tasks():
            tasks.put(task)
        for _ in procs:
            tasks.put(None)
        time.sleep(0.5)  # the feeder thread has begun filling the pipe when the clock starts
        t0 = time.monotonic()
        go.set()
        text_vectors: dict[int, Vectors] = {}
        image_vectors: dict[int, Vectors] = {}
        ends: list[float] = []
        busy: list[float] = []
        tokens = padded = 0
        while len(ends) < len(procs):
            try:
                kind, n, payload, real, pad = results.get(timeout=60)
            except queue.Empty:
                if not all(p.is_alive() for p in procs):
                    raise RuntimeError("a floor process died") from None
                continue
            if kind == "done":
                ends.append(payload[0])
                busy.append(payload[1])
            elif kind == "text":
                text_vectors[n], tokens, padded = payload, tokens + real, padded + pad
            else:
                image_vectors[n] = payload
        return PoolFloor(processes, threads, max(ends) - t0, busy, sum(len(b) for b in work.text),
                         sum(len(b) for b in work.images), tokens, padded,
                         [text_vectors[n] for n in range(len(work.text))],
                         [image_vectors[n] for n in range(len(work.images))])
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)


def max_diff(settings: Settings, run: Run, work: FloorWork, floor: PoolFloor) -> float:
    """Largest |difference| between the floor's text vectors and those the pipeline cached for the same texts."""
    cache = VectorCache(LocalArtifactStore(settings.artifacts), str(run.plan["model"]))
    diffs = [float(np.abs(cache.get(text_key(t)) - vec).max())
             for batch, vecs in zip(work.text, floor.text_vectors, strict=True)
             for t, vec in zip(batch, vecs, strict=True) if cache.has(text_key(t))]  # a bad image has no caption vector
    return max(diffs, default=0.0)
