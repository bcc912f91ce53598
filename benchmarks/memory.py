"""Peak RSS per stage and per worker process, on a small and a large repository (issue P6: flat in size).

Runs the real system (a private Redis, the API in a thread, one worker process with its prefork pool, as
`benchmarks/harness.py` starts them), submits a process-all job with embeddings over HTTP for each corpus, and
every ~0.2 s samples VmRSS and VmHWM of the worker's main process and of every pool child from /proc. Each sample
is attributed to the stages the job's state in Redis shows running at that moment (and to "idle" between jobs).
It prints, per corpus, per stage, the peak RSS of the main process and of the largest child, and the growth ratio
large/small per stage; it writes the same as JSON (benchmarks/results/memory.json by default).

    python -m benchmarks.memory [--corpora small,til] [--small-articles 6] [--keep] [--out PATH]

Each corpus runs on a fresh worker. Corpora: "small" is the first N English articles of opensource-guide; "guide"
all of them; "til" the til corpus (577 posts); "guide-all" the whole opensource-guide, every language (349 posts,
47 media, 2.9 M MiniLM tokens: the largest). A pool child keeps what it once allocated (Python rarely returns
memory to the system), so a stage's peak in a child includes what earlier stages left there; the `rise` column
(VmHWM growth while the stage ran) is the memory the stage itself added on top.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.guide_corpus import english_corpus, whole_corpus
from benchmarks.harness import JOB_TIMEOUT_S, Harness
from benchmarks.worker_memory import _kib, descendants
from pipeline.models import JobStatus, StageStatus
from pipeline.plans import job_is_over
from pipeline.settings import Settings

SAMPLE_S = 0.2
RESULTS = Path(__file__).resolve().parent / "results" / "memory.json"


@dataclass
class StagePeak:
    """What one stage cost in memory: peaks in MiB over the samples taken while it ran."""

    main_rss: float = 0.0
    child_rss: float = 0.0
    rise: float = 0.0  # the largest VmHWM growth of one process while the stage ran
    samples: int = 0

    def to_json(self) -> dict[str, float]:
        return {"main_rss_mib": round(self.main_rss, 1), "child_rss_mib": round(self.child_rss, 1),
                "rise_mib": round(self.rise, 1), "samples": self.samples}


@dataclass
class Sampler:
    """Samples one worker's processes and files each sample under the stages running then."""

    worker_pid: int
    peaks: dict[str, StagePeak] = field(default_factory=dict)
    hwm_at_start: dict[tuple[str, int], int] = field(default_factory=dict)  # (stage, pid) → VmHWM when first seen

    def sample(self, stages: list[str]) -> None:
        kids = descendants(self.worker_pid)
        main = _kib(self.worker_pid, "status", "VmRSS") / 1024
        child = max([_kib(k, "status", "VmRSS") for k in kids] or [0]) / 1024
        hwm = {p: _kib(p, "status", "VmHWM") for p in [self.worker_pid, *kids]}
        for stage in stages or ["idle"]:
            pk = self.peaks.setdefault(stage, StagePeak())
            pk.main_rss = max(pk.main_rss, main)
            pk.child_rss = max(pk.child_rss, child)
            pk.samples += 1
            for pid, h in hwm.items():
                if not h:
                    continue
                first = self.hwm_at_start.setdefault((stage, pid), h)
                pk.rise = max(pk.rise, (h - first) / 1024)


def running_stages(harness: Harness, job_id: str) -> tuple[list[str], Any]:
    """The stages running now; else the job's current stage (queued, or waiting for its batch tasks)."""
    assert harness.store is not None
    job = harness.store.get(job_id)
    running = [s.name for s in job.stages if s.status == StageStatus.RUNNING]
    current = job.next_stage()
    return running or ([current.name] if current is not None else []), job


def run_corpus(harness: Harness, sampler: Sampler, label: str, corpus: Path, settings: Settings) -> dict[str, Any]:
    """Submit one job over HTTP and sample until it is over; the per-stage peaks and the job's own figures."""
    assert harness.client is not None
    sampler.peaks = {}
    sampler.hwm_at_start = {}
    for _ in range(5):
        sampler.sample(["idle"])
        time.sleep(SAMPLE_S)
    job_id = f"mem-{label}-{time.time_ns()}"
    resp = harness.client.post("/jobs", json={"task": "process-all", "source": str(corpus), "job_id": job_id})
    if resp.status_code != 202:
        raise RuntimeError(f"POST /jobs answered {resp.status_code}: {resp.text}")
    started = time.monotonic()
    while True:
        stages, job = running_stages(harness, job_id)
        if job_is_over(job):
            break
        sampler.sample(stages)
        if not all(w.alive() for w in harness.workers):
            raise RuntimeError(f"the worker exited during {label}")
        if time.monotonic() - started > JOB_TIMEOUT_S:
            raise RuntimeError(f"job {job_id} did not finish within {JOB_TIMEOUT_S:.0f} s")
        time.sleep(SAMPLE_S)
    if job.status != JobStatus.COMPLETED:
        raise RuntimeError(f"job {job_id} {job.status.value}: {job.error}")
    parse = job.stage("parse")
    posts = int(parse.summary.get("posts") or 0)
    bundle = Path(str(job.stage("publish").summary.get("path") or ""))
    return {"corpus": label, "source": str(corpus), "job_id": job_id, "posts": posts,
            "images": variants_per_image(bundle / "medias.json"),
            "wall_s": round(time.monotonic() - started, 1),
            "stage_s": {s.name: round(s.elapsed_s, 2) for s in job.stages},
            "stage_summary": {s.name: s.summary for s in job.stages},
            "peaks": {name: pk.to_json() for name, pk in sampler.peaks.items()},
            "output": settings.output}


def variants_per_image(medias_json: Path) -> dict[str, int]:
    """Source images and the image variants the bundle lists for them (every size, every format)."""
    medias = json.loads(medias_json.read_text()) if medias_json.is_file() else []
    sized = [m for m in medias if m.get("sizes")]
    return {"medias": len(medias), "resized": len(sized),
            "variants": sum(len(v) for m in sized for v in m["sizes"].values())}


def make_corpus(name: str, root: Path, small_articles: int) -> Path:
    if name == "small":
        return english_corpus(root / "small", articles=small_articles)[0]
    if name == "guide":
        return english_corpus(root / "guide")[0]
    return whole_corpus(name, root / name)


def report(runs: list[dict[str, Any]]) -> str:
    lines = []
    for r in runs:
        lines.append(f"\n{r['corpus']}: {r['posts']} posts, {r['wall_s']} s")
        lines.append(f"  {'stage':<14} {'main MiB':>9} {'child MiB':>10} {'rise MiB':>9} {'stage s':>8}")
        for name, pk in r["peaks"].items():
            lines.append(f"  {name:<14} {pk['main_rss_mib']:>9.0f} {pk['child_rss_mib']:>10.0f} "
                         f"{pk['rise_mib']:>9.0f} {r['stage_s'].get(name, 0.0):>8.1f}")
    if len(runs) >= 2:
        small, large = runs[0], runs[-1]
        lines.append(f"\ngrowth {large['corpus']} / {small['corpus']} (largest process RSS per stage)")
        for name, pk in large["peaks"].items():
            base = small["peaks"].get(name)
            if base:
                a = max(pk["main_rss_mib"], pk["child_rss_mib"])
                b = max(base["main_rss_mib"], base["child_rss_mib"])
                lines.append(f"  {name:<14} {b:>6.0f} → {a:>6.0f} MiB  ×{a / max(b, 1):.2f}")
    return "\n".join(lines)


def peak_rss_mib(runs: list[dict[str, Any]]) -> float:
    """The P6 figure: the largest RSS any worker process reached during the largest run."""
    return float(max(max(pk["main_rss_mib"], pk["child_rss_mib"]) for pk in runs[-1]["peaks"].values()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-articles", type=int, default=6)
    ap.add_argument("--corpora", default="small,til",
                    help="comma-separated, smallest first: small, guide, til, guide-all")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (bundles, logs)")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="repobuild-mem-"))
    base = Settings.from_env().with_(redis_url=None, local_source_roots=(str(root),))
    harness = Harness(root, base)
    runs: list[dict[str, Any]] = []
    try:
        harness.start()
        settings = harness.base.with_(artifacts=str(root / "artifacts"), output=str(root / "out"),
                                      temp_dir=str(root / "tmp"))
        for name in args.corpora.split(","):
            corpus = make_corpus(name, root / "corpora", args.small_articles)
            # a fresh worker per corpus: a pool child keeps what an earlier job made it allocate
            harness.stop_workers()
            worker = harness.start_worker(settings, concurrency=args.concurrency)
            assert worker.proc is not None
            sampler = Sampler(worker.proc.pid)
            runs.append(run_corpus(harness, sampler, name, corpus, settings))
            print(report(runs[-1:]), flush=True)
        print(report(runs))
        result = {"at": time.time(), "concurrency": args.concurrency, "runs": runs,
                  "peak_rss_mib": peak_rss_mib(runs), "kept": str(root) if args.keep else None}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\npeak RSS of any worker process on the largest run: {result['peak_rss_mib']:.0f} MiB; "
              f"wrote {args.out}")
        return 0
    finally:
        harness.close()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
