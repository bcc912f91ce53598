"""Pure tier: the rules of a job's life that the worker, the reconciler, the API and the CLI share (plans.py)."""

from __future__ import annotations

from pipeline.models import JobSpec, JobStatus, StageState, StageStatus
from pipeline.plans import callback_record, job_is_over, may_run, stage_to_drive
from pipeline.stores.jobs import JobView

DONE, PENDING, FAILED = StageStatus.DONE, StageStatus.PENDING, StageStatus.FAILED


def view(status: JobStatus, **stages: StageStatus | StageState) -> JobView:
    states = [s if isinstance(s, StageState) else StageState(name=n, status=s) for n, s in stages.items()]
    return JobView(spec=JobSpec(job_id="j", task="acquire-user-repo"), status=status, stages=states, created_at=0.0,
                   updated_at=0.0, started_at=None, finished_at=None, error=None, result=None, callback=None)


def test_a_job_is_over_once_its_outcome_is_known_and_reported() -> None:
    assert not job_is_over(view(JobStatus.RUNNING, fetch=DONE, notify=PENDING))
    assert not job_is_over(view(JobStatus.COMPLETED, fetch=DONE, notify=PENDING))
    assert job_is_over(view(JobStatus.COMPLETED, fetch=DONE, notify=DONE))
    assert job_is_over(view(JobStatus.FAILED, fetch=FAILED, notify=FAILED))
    assert job_is_over(view(JobStatus.CANCELLED, fetch=StageStatus.CANCELLED))


def test_notify_runs_for_every_outcome_once_it_is_known() -> None:
    assert not may_run(view(JobStatus.RUNNING, fetch=PENDING, notify=PENDING), "notify")
    assert may_run(view(JobStatus.RUNNING, fetch=DONE, notify=PENDING), "notify")
    assert may_run(view(JobStatus.FAILED, fetch=FAILED, notify=PENDING), "notify")
    assert may_run(view(JobStatus.CANCELLED, fetch=StageStatus.CANCELLED, notify=PENDING), "notify")
    assert not may_run(view(JobStatus.CANCELLED, fetch=PENDING, notify=PENDING), "fetch")
    assert may_run(view(JobStatus.QUEUED, fetch=PENDING, notify=PENDING), "fetch")


def test_the_stage_a_job_waits_on() -> None:
    running = view(JobStatus.RUNNING, fetch=DONE, parse=PENDING, notify=PENDING)
    assert stage_to_drive(running) is running.stage("parse")
    failed = view(JobStatus.FAILED, fetch=FAILED, notify=PENDING)
    assert stage_to_drive(failed) is failed.stage("notify")
    assert stage_to_drive(view(JobStatus.COMPLETED, fetch=PENDING, notify=PENDING)) is None
    assert stage_to_drive(view(JobStatus.FAILED, fetch=FAILED)) is None


def test_callback_record() -> None:
    delivered = StageState(name="notify", status=DONE, summary={"delivered": True, "http_status": 200})
    assert callback_record(view(JobStatus.COMPLETED, notify=delivered)) == {"status": "delivered", "delivered": True,
                                                                            "http_status": 200}
    nothing = StageState(name="notify", status=DONE, summary={"delivered": False})
    assert callback_record(view(JobStatus.COMPLETED, notify=nothing)) == {"status": "none", "delivered": False}
    dead = StageState(name="notify", status=FAILED, error="callback to http://x/ refused with 400", attempts=1)
    assert callback_record(view(JobStatus.COMPLETED, notify=dead)) == {
        "status": "failed", "error": "callback to http://x/ refused with 400", "attempts": 1}
    assert callback_record(view(JobStatus.COMPLETED, fetch=DONE)) is None
