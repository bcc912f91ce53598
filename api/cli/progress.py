"""Progress for `repobuild run`: one bar per stage on a terminal; elsewhere (CI, `docker logs`, a file) a line
per stage transition and, every few seconds, a line with the counts, the rate and the time left."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from api.cli.exits import silence
from api.cli.local_services import WorkerProcess
from pipeline.models import StageState, StageStatus
from pipeline.plans import job_is_over
from pipeline.stores.jobs import JobStore, JobView

LINE_EVERY_S = 5.0


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _stage_progress(s: StageState, now: float) -> str:
    wall = s.wall_s(now)
    if not s.total:
        return f"{s.name} {s.status.value} {_clock(wall)}"
    text = f"{s.name} {s.done}/{s.total} ({100 * s.done // s.total}%)"
    rate = s.done / wall if wall > 0 else 0.0
    if rate > 0:
        text += f" {rate:.1f}/s eta {_clock((s.total - s.done) / rate)}"
    else:
        text += " eta unknown"
    return text


def progress_line(job: JobView, now: float) -> str:
    """`progress 0:01:05 | 3/8 stages done | embed_text 12/40 (30%) 2.1/s eta 0:00:13` (the clock from submission)."""
    done = sum(1 for s in job.stages if s.status == StageStatus.DONE)
    busy = [s for s in job.stages if s.status in (StageStatus.RUNNING, StageStatus.QUEUED) and s.started_at]
    parts = [f"progress {_clock(max(0.0, now - job.created_at))}", f"{done}/{len(job.stages)} stages done",
             *(_stage_progress(s, now) for s in busy)]
    return " | ".join(parts)


@contextlib.contextmanager
def _shown(bars: Progress) -> Iterator[Progress]:
    bars.start()
    try:
        yield bars
    finally:
        try:
            bars.stop()  # draws the bars a last time
        except OSError:  # the terminal is gone (EIO, EPIPE): what ended the watch is what matters
            silence(sys.stderr)



def watch_job(store: JobStore, job_id: str, worker: WorkerProcess | None = None, poll_s: float = 0.2,
              line_every_s: float = LINE_EVERY_S) -> JobView:
    console = Console(stderr=True)
    tty = sys.stderr.isatty()
    seen: dict[str, str] = {}
    last_line = time.monotonic()
    columns = (TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn())
    with _shown(Progress(*columns, console=console, transient=False, disable=not tty)) as bars:
        ids: dict[str, TaskID] = {}
        job = store.get(job_id)
        for s in job.stages:
            ids[s.name] = bars.add_task(s.name, total=None, status=s.status.value)
        while True:
            job = store.get(job_id)
            for s in job.stages:
                total = s.total or (1 if s.status == StageStatus.DONE else None)
                done = s.total if s.status == StageStatus.DONE and s.total else (s.done if s.total else (
                    1 if s.status == StageStatus.DONE else 0))
                bars.update(ids[s.name], total=total, completed=done, status=s.status.value)
                # A started stage waiting for its next continuation is still at work, not a transition.
                shown = "running" if s.status == StageStatus.QUEUED and s.started_at else s.status.value
                if not tty and seen.get(s.name) != shown:
                    # no terminal (CI, a log file): one line per stage transition instead of bars
                    seen[s.name] = shown
                    console.print(f"{s.name}: {shown}" + (f" ({s.error})" if s.error else ""), highlight=False)
            if job_is_over(job):
                return job
            if not tty and time.monotonic() - last_line >= line_every_s:
                last_line = time.monotonic()
                console.print(progress_line(job, time.time()), highlight=False, soft_wrap=True)
            if worker is not None and not worker.alive():
                raise SystemExit(f"repobuild: the worker process exited (log: {worker.log_path})")
            time.sleep(poll_s)
