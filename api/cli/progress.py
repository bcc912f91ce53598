"""Progress bars for `repobuild run`: one per stage, fed by polling the job state."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from api.cli.exits import silence
from api.cli.local_services import WorkerProcess
from pipeline.models import StageStatus
from pipeline.plans import job_is_over
from pipeline.stores.jobs import JobStore, JobView


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


def watch_job(store: JobStore, job_id: str, worker: WorkerProcess | None = None, poll_s: float = 0.2) -> JobView:
    console = Console(stderr=True)
    tty = sys.stderr.isatty()
    seen: dict[str, str] = {}
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
                if not tty and seen.get(s.name) != s.status.value:
                    # no terminal (CI, a log file): one line per stage transition instead of bars
                    seen[s.name] = s.status.value
                    console.print(f"{s.name}: {s.status.value}" + (f" ({s.error})" if s.error else ""))
            if job_is_over(job):
                return job
            if worker is not None and not worker.alive():
                raise SystemExit(f"repobuild: the worker process exited (log: {worker.log_path})")
            time.sleep(poll_s)
