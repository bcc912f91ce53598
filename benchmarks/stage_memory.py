"""Peak RSS of one stage on its own: the stage replayed in a fresh process on a finished job's artifacts.

`benchmarks.memory --keep` leaves a job's artifacts behind; this runs one stage of that job again (parse, build_db,
enrich, publish...) in a child process with a local context and prints the child's RSS before the stage and its
peak (VmHWM) after, so one stage's memory is measured without what a pool child kept from earlier stages.

    python -m benchmarks.stage_memory KEPT_FOLDER JOB_ID STAGE [STAGE...]

It rewrites that stage's outputs in the kept artifact store (the same bytes: the stages are deterministic),
and a publish writes a new revision into the kept output folder.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from pipeline.models import JobSpec, SourceSpec
from pipeline.settings import Settings
from pipeline.stages.context import LocalContext, run_to_end
from pipeline.stages.registry import STAGES
from pipeline.stores.artifacts import LocalArtifactStore


def _status_mib(field_name: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def replay(kept: Path, job_id: str, stage: str) -> dict[str, float]:
    """In this process: run `stage` of `job_id` on the artifacts under `kept`; RSS before, peak after (MiB)."""
    settings = Settings.from_env().with_(redis_url=None, artifacts=str(kept / "artifacts"), output=str(kept / "out"),
                                         temp_dir=str(kept / "tmp"), local_source_roots=(str(kept),))
    store = LocalArtifactStore(settings.artifacts)
    corpus = next((p for p in (kept / "corpora").iterdir() if job_id.startswith(f"mem-{p.name}-")), None)
    spec = JobSpec(job_id=job_id, task="process-all", source=SourceSpec(path=str(corpus or kept)),
                   output=settings.output)
    found = {s.name: s for s in STAGES}[stage]
    ctx = LocalContext(job_id=job_id, stage=stage, spec=spec, settings=settings, artifacts=store,
                       batch_fn=found.batch)
    before = _status_mib("VmRSS")
    run_to_end(found.run, ctx)
    return {"rss_before_mib": round(before, 1), "peak_mib": round(_status_mib("VmHWM"), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kept", type=Path)
    ap.add_argument("job_id")
    ap.add_argument("stages", nargs="+")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the measured process itself
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(replay(args.kept, args.job_id, args.stages[0])))
        return 0
    for stage in args.stages:
        out = subprocess.run([sys.executable, "-m", "benchmarks.stage_memory", "--child", str(args.kept),
                              args.job_id, stage], capture_output=True, text=True, check=False)
        if out.returncode:
            print(f"{stage}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            return 1
        got = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{stage:<14} RSS before {got['rss_before_mib']:>6.0f} MiB, peak {got['peak_mib']:>6.0f} MiB, "
              f"the stage's own {got['peak_mib'] - got['rss_before_mib']:>6.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
