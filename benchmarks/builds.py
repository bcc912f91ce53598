"""The one run behind P1 and P2: a full process-all build, two one-post rebuilds, and the embedding floor.

Corpus: one repository holding the English posts of opensource-guide (as `benchmarks.embedding` lays them out) and
every til post under `til/` (benchmarks.guide_corpus.guide_and_til), so one job builds both and pays the job's
fixed costs once, as a user with that repository would.

1. full: process-all on a cold artifact store, 1 worker × N pool processes (default 2, what `repobuild run`
   starts), submitted over HTTP and timed from the job state; the CPU of each pool process is sampled meanwhile;
2. rebuild A: the same store, one guide post edited (guide_corpus.edit_one_post); rebuild B: on top of A, one til
   post edited the same way (edit_til_post). Each rebuild differs from the build before it by one post;
3. the floor (benchmarks.pool_floor): the inputs the full build embedded, N processes × T threads, T being the
   worker's own onnxruntime thread count, so the floor has the worker's cores and no more.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.cpu_use import HZ
from benchmarks.guide_corpus import edit_one_post, edit_til_post, guide_and_til
from benchmarks.harness import Harness, Run, embed_phases
from benchmarks.pool_floor import PoolFloor, max_diff, pool_floor, work_of
from benchmarks.report import load_average
from benchmarks.worker_memory import descendants
from pipeline.settings import Settings

SAMPLE_S = 0.25


@dataclass
class CpuSampler:
    """CPU seconds of every pool process of the workers, sampled in a thread: how busy each core was when."""

    pids: list[int]
    samples: list[tuple[float, dict[int, float]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_S):
            now: dict[int, float] = {}
            for pid in [c for p in self.pids for c in descendants(p)]:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    raw = Path(f"/proc/{pid}/stat").read_text()
                    f = raw[raw.rindex(")") + 2:].split()
                    now[pid] = (int(f[11]) + int(f[12])) / HZ
            self.samples.append((time.time(), now))

    def busy(self, start: float, end: float) -> dict[int, float]:
        """Each pool process's share of one core between `start` and `end` (epoch seconds)."""
        inside = [(t, s) for t, s in self.samples if start <= t <= end]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] <= 0:
            return {}
        (t0, a), (t1, b) = inside[0], inside[-1]
        return {pid: (b[pid] - a.get(pid, b[pid])) / (t1 - t0) for pid in b}


@dataclass
class Builds:
    settings: Settings
    concurrency: int
    threads: int
    posts: int
    images: int
    full: Run
    rebuilds: list[tuple[str, Run, Run]]  # (what was edited, the build before, the rebuild)
    floor: PoolFloor
    diff: float
    busy: dict[str, dict[int, float]]  # phase → pool process → share of a core
    phases: dict[str, dict[str, float]]
    load: dict[str, str]  # `uptime`'s load average at each step
    cost_s: float

    def to_json(self) -> dict[str, Any]:
        f = self.floor
        return {"posts": self.posts, "images": self.images, "concurrency": self.concurrency, "threads": self.threads,
                "full_wall_s": round(self.full.wall_s, 2),
                "stages_s": stage_times(self.full),
                "floor": {"seconds": round(f.seconds, 2), "processes": f.processes, "threads": f.threads,
                          "texts": f.texts, "images": f.images, "tokens": f.tokens, "padded": f.padded,
                          "busy_cpu_s": [round(b, 2) for b in f.busy_s], "max_abs_diff": self.diff},
                "busy": {k: {str(p): round(v, 2) for p, v in d.items()} for k, d in self.busy.items()},
                "phases": {k: {p: round(v, 2) for p, v in d.items() if p in ("plan", "batches", "assemble")}
                           for k, d in self.phases.items()},
                "rebuilds": [{"edited": what, "wall_s": round(r.wall_s, 2), "stages_s": stage_times(r)}
                             for what, _, r in self.rebuilds],
                "load": self.load, "cost_s": round(self.cost_s, 1)}


def stage_times(run: Run) -> dict[str, dict[str, float]]:
    """Per stage: its wall time and the gap since the stage before it ended (chain hand-off, polls)."""
    out: dict[str, dict[str, float]] = {}
    prev = run.job.spec.created_at
    for s in run.job.stages:
        if s.started_at is None or s.finished_at is None:
            continue
        out[s.name] = {"wall_s": round(s.finished_at - s.started_at, 2), "gap_s": round(s.started_at - prev, 2),
                       "task_s": round(s.elapsed_s, 2)}
        prev = s.finished_at
    return out


def run_builds(root: Path, base: Settings, concurrency: int = 2, threads: int | None = None) -> Builds:
    """Everything behind P1 and P2, in `root`; the caller owns `root` and gives a started-nothing `base`."""
    from pipeline.embedders.select import _threads

    t_start = time.monotonic()
    threads = threads or _threads(base)
    base = base.with_(embed_threads=threads, local_source_roots=(str(root),))
    load = {"start": load_average()}
    corpus, posts, images = guide_and_til(root / "corpus")
    harness = Harness(root, base)
    try:
        harness.start()
        settings = harness.settings(root / "artifacts")
        worker = harness.start_worker(settings, concurrency=concurrency)
        assert worker.proc is not None
        sampler = CpuSampler([worker.proc.pid])
        thread = threading.Thread(target=sampler.run, daemon=True)
        thread.start()
        try:
            full = harness.submit("full", corpus, settings)
        finally:
            sampler.stop.set()
            thread.join()
        load["full"] = load_average()
        assert harness.store is not None
        phases = {name: embed_phases(harness.store, full.job, name) for name in ("embed_text", "embed_images")}
        busy = {f"{name} batches": sampler.busy(p["planned_at"], p["planned_at"] + p["batches"])
                for name, p in phases.items()}
        busy["whole job"] = sampler.busy(full.job.spec.created_at, full.job.finished_at or time.time())
        rebuilds = []
        before, src = full, corpus
        for label, edit in (("A", edit_one_post), ("B", edit_til_post)):
            edited = root / f"corpus-{label}"
            shutil.copytree(src, edited)
            paragraph = edit(edited)
            run = harness.submit(f"rebuild{label}", edited, settings)
            rebuilds.append((f"{edit.__name__}: “{paragraph}…”", before, run))
            before, src = run, edited
        load["rebuilds"] = load_average()
        harness.stop_workers()
        work = work_of(settings, full)
        floor = pool_floor(work, settings, concurrency, threads)
        load["floor"] = load_average()
        diff = max_diff(settings, full, work, floor)
        return Builds(settings, concurrency, threads, posts, images, full, rebuilds, floor, diff, busy, phases, load,
                      time.monotonic() - t_start)
    finally:
        harness.close()
