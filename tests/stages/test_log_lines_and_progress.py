"""Pure tier: the JSON log line, the context its fields come from, a stage's wall and task time, the progress line."""

from __future__ import annotations

import io
import json
import logging
import threading

from api.cli.progress import progress_line
from pipeline.log_lines import add_log_fields, apply_log_format, start_log_context
from pipeline.models import JobSpec, JobStatus, StageState, StageStatus
from pipeline.stores.jobs import JobView


def logger_to(stream: io.StringIO, log_format: str) -> logging.Logger:
    logger = logging.getLogger(f"test.log_lines.{log_format}")
    logger.propagate = False
    logger.handlers = [logging.StreamHandler(stream)]
    logger.setLevel(logging.INFO)
    apply_log_format(log_format, logger.handlers)
    apply_log_format(log_format, logger.handlers)  # idempotent
    return logger


def test_json_lines_carry_the_context_and_extra_wins() -> None:
    out = io.StringIO()
    log = logger_to(out, "json")
    start_log_context(job_id="j1", stage="parse", task_id="t-1")
    add_log_fields(attempt=2)
    log.info("parsed %d posts", 3)
    log.warning("lease lost", extra={"stage": "embed_text"})
    start_log_context()
    log.info("about no job")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    first, second, third, fourth = (json.loads(line) for line in out.getvalue().splitlines())
    assert (first["job_id"], first["stage"], first["attempt"], first["task_id"]) == ("j1", "parse", 2, "t-1")
    assert first["message"] == "parsed 3 posts" and first["level"] == "info" and first["ts"].endswith("Z")
    assert second["stage"] == "embed_text" and second["job_id"] == "j1"
    assert {k: third[k] for k in ("job_id", "stage", "attempt", "task_id")} == dict.fromkeys(
        ("job_id", "stage", "attempt", "task_id"))
    assert "ValueError: boom" in fourth["exc"]


def test_the_context_is_per_thread_and_text_stays_text() -> None:
    out, text = io.StringIO(), io.StringIO()
    log, plain = logger_to(out, "json"), logger_to(text, "text")
    start_log_context(job_id="main-job")
    # a thread a task starts (a lease keeper) does not inherit the task's fields: it names them in extra=
    thread = threading.Thread(target=lambda: log.info("from a thread"))
    thread.start()
    thread.join()
    log.info("from the task")
    plain.info("human-readable")
    start_log_context()
    assert [json.loads(line)["job_id"] for line in out.getvalue().splitlines()] == [None, "main-job"]
    assert text.getvalue() == "human-readable\n"


def stage(name: str, status: StageStatus, started: float | None, finished: float | None = None, done: int = 0,
          total: int = 0, own: float = 0.0, batches: float = 0.0) -> StageState:
    return StageState(name=name, status=status, started_at=started, finished_at=finished, done=done, total=total,
                      elapsed_s=own, batch_s=batches)


def test_wall_time_runs_from_first_start_to_done_and_task_time_adds_the_batches() -> None:
    s = stage("embed_text", StageStatus.DONE, 100.0, 1600.0, own=40.45, batches=2900.0)
    assert s.wall_s(now=5000.0) == 1500.0
    assert s.task_s == 2940.45
    retried = stage("embed_text", StageStatus.RUNNING, 100.0, 150.0)  # failed at 150, retried, running again
    assert retried.wall_s(now=400.0) == 300.0
    assert stage("x", StageStatus.PENDING, None).wall_s(now=1.0) == 0.0


def test_progress_line_gives_counts_rate_and_eta() -> None:
    stages = [stage("fetch", StageStatus.DONE, 10.0, 11.0), stage("parse", StageStatus.DONE, 11.0, 12.0),
              stage("embed_text", StageStatus.QUEUED, 12.0, done=10, total=40),
              stage("notify", StageStatus.PENDING, None)]
    job = JobView(spec=JobSpec(job_id="j", task="process-all"), status=JobStatus.RUNNING, stages=stages,
                  created_at=5.0, updated_at=17.0, started_at=10.0, finished_at=None, error=None, result=None,
                  callback=None)
    assert progress_line(job, now=17.0) == ("progress 0:00:12 | 2/4 stages done | "
                                            "embed_text 10/40 (25%) 2.0/s eta 0:00:15")
    stages[2] = stage("embed_text", StageStatus.RUNNING, 17.0, done=0, total=40)
    assert progress_line(job, now=17.0).endswith("embed_text 0/40 (0%) eta unknown")
