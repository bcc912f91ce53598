"""A job as both job stores keep it: one hash of strings (spec, status, times, `stage:<name>` states),
an issue as a JSON string, an event as a dict of strings. One encoding, so the Redis store and its
in-memory twin cannot drift in what they store, and jobs already in Redis read back as they were.
Every message on the way in (errors, issues, events) is capped here (messages.py), for both stores.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, cast

from pipeline.models import JSON, Issue, JobSpec, JobStatus, StageState, StageStatus
from pipeline.stores.jobs import JobView
from pipeline.stores.messages import PATH_MAX_CHARS, capped, capped_json

_STAGE_FIELDS = tuple(f.name for f in dataclasses.fields(StageState))


def new_job(spec: JobSpec, stages: tuple[str, ...], now: float,
            first_queued: bool = False) -> tuple[dict[str, str], JobView]:
    """A new job's hash, and the view that reading it back would give: a store hands that back from `create`
    without a read (a round trip to Redis and a decode in every submission). `first_queued`: the first stage's
    message is sent with the job, so that stage is `queued` from the start."""
    states = [StageState(name=name, enqueued_at=now) for name in stages]
    if first_queued and states:
        states[0].status = StageStatus.QUEUED
    fields: dict[str, str] = {
        "spec": spec.model_dump_json(),
        "fingerprint": spec.fingerprint(),
        "status": JobStatus.QUEUED.value,
        "created_at": repr(now),
        "updated_at": repr(now),
        "plan": json.dumps(list(stages)),
    }
    for state in states:
        fields[f"stage:{state.name}"] = encode_stage(state)
    return fields, JobView(spec=spec, status=JobStatus.QUEUED, stages=states, created_at=now, updated_at=now,
                           started_at=None, finished_at=None, error=None, result=None, callback=None)


def encode_stage(state: StageState) -> str:
    # The same JSON as state.to_json(), without its deep copy (dataclasses.asdict): json.dumps only reads the
    # values, and that copy was a fifth of a submission's CPU (a job writes every stage's state when it is made).
    fields = {name: getattr(state, name) for name in _STAGE_FIELDS}
    fields["status"] = state.status.value
    if fields["error"]:
        fields["error"] = capped(fields["error"])
    return json.dumps(fields)


def decode_stage(raw: str) -> StageState:
    return StageState.from_json(json.loads(raw))


def encode_issue(issue: Issue) -> str:
    fields = issue.to_json()
    fields["path"], fields["message"] = capped(fields["path"], PATH_MAX_CHARS), capped(fields["message"])
    return json.dumps(fields)


def decode_issue(raw: str) -> JSON:
    return cast(JSON, json.loads(raw))


def field_values(status: JobStatus | None, fields: dict[str, Any]) -> dict[str, str]:
    """What `set_job` writes: strings as they are, floats exactly (repr), anything else as JSON; every string
    in them capped (the job's error, its callback's outcome)."""
    mapping: dict[str, str] = {}
    if status is not None:
        mapping["status"] = status.value
    for name, value in fields.items():
        if isinstance(value, float):
            mapping[name] = repr(value)
        elif isinstance(value, str):
            mapping[name] = capped(value)
        else:
            mapping[name] = json.dumps(capped_json(value))
    return mapping


def view(job_id: str, raw: dict[str, str]) -> JobView:
    """The job hash read back; KeyError when there is no job (or only stray fields of an expired one)."""
    if not raw or "spec" not in raw:
        raise KeyError(job_id)
    plan: list[str] = json.loads(raw["plan"])
    stages = [decode_stage(raw[f"stage:{n}"]) for n in plan]

    def num(name: str) -> float | None:
        return float(raw[name]) if raw.get(name) else None

    def obj(name: str) -> JSON | None:
        return cast(JSON, json.loads(raw[name])) if raw.get(name) else None

    return JobView(
        spec=JobSpec.model_validate_json(raw["spec"]),
        status=JobStatus(raw["status"]),
        stages=stages,
        created_at=float(raw["created_at"]),
        updated_at=float(raw["updated_at"]),
        started_at=num("started_at"),
        finished_at=num("finished_at"),
        error=obj("error"),
        result=obj("result"),
        callback=obj("callback"),
    )


def event_fields(kind: str, message: str, extra: dict[str, Any]) -> dict[str, str]:
    fields = {"type": kind, "message": capped(message), "ts": repr(time.time())}
    fields.update({k: capped(str(v)) for k, v in extra.items()})
    return fields
