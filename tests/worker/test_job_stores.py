"""The JobStore contract, run against the Redis store and its in-memory twin alike: what the unit tests
of the worker rely on of MemoryJobStore is what RedisJobStore does on a real redis-server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from api.cli.local_services import PrivateRedis
from pipeline.models import Issue, JobSpec, JobStatus, StageState, StageStatus
from pipeline.stores import job_hash
from pipeline.stores.jobs import JobExists, JobStore
from pipeline.stores.jobs_memory import MemoryJobStore
from pipeline.stores.jobs_redis import RedisJobStore
from pipeline.stores.keys import RedisKeys

TTL_S = 2  # short, so that expiry can be seen; every write in these tests refreshes it well within


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with PrivateRedis() as server:
        yield server.url


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[JobStore]:
    if request.param == "memory":
        yield MemoryJobStore(ttl_s=TTL_S, events_max=5)
        return
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"), decode_responses=True)
    client.flushdb()
    yield RedisJobStore(client, ttl_s=TTL_S, events_max=5)
    client.close()


def spec(job_id: str = "j1", project: str | None = None, **options: object) -> JobSpec:
    return JobSpec(job_id=job_id, task="process-all", project_id=project, options=dict(options), created_at=1.0)


def stored_keys(store: JobStore) -> set[str]:
    if isinstance(store, RedisJobStore):
        return set(store.r.keys("*"))
    assert isinstance(store, MemoryJobStore)
    return {k for k in list(store.space._values) if store.space.get(k) is not None}


def test_create_is_idempotent_and_refuses_another_body(store: JobStore) -> None:
    job, created = store.create(spec(), ("fetch", "parse"), {"git_token": "t0k"})
    assert created and job.status == JobStatus.QUEUED and [s.name for s in job.stages] == ["fetch", "parse"]
    assert all(s.status == StageStatus.PENDING and s.enqueued_at for s in job.stages)
    again, created = store.create(spec(), ("fetch", "parse"))
    assert not created and again == job
    with pytest.raises(JobExists):
        store.create(spec(depth=1), ("fetch",))
    assert store.exists("j1") and not store.exists("nope") and store.secrets("j1") == {"git_token": "t0k"}
    with pytest.raises(KeyError):
        store.get("nope")
    with pytest.raises(KeyError):
        store.stage("j1", "upload")
    assert store.status("nope") is None
    store.forget_secrets("j1")
    assert store.secrets("j1") == {} and store.exists("j1")  # the job stays, its secrets go


def test_projects_number_their_submissions(store: JobStore) -> None:
    store.create(spec("a", project="p"), ("fetch",))
    store.create(spec("b", project="p"), ("fetch",))
    store.create(spec("c"), ("fetch",))
    assert [store.project_seq(j) for j in ("a", "b", "c")] == [1, 2, None]


def test_job_fields_are_set_and_cleared(store: JobStore) -> None:
    store.create(spec(), ("fetch",))
    store.set_job("j1", JobStatus.RUNNING, started_at=12.5, result={"posts": 3}, error={"message": "x"})
    job = store.get("j1")
    assert (job.status, job.started_at, job.result, job.error) == (JobStatus.RUNNING, 12.5, {"posts": 3},
                                                                    {"message": "x"})
    store.set_job("j1", error="", started_at="")
    job = store.get("j1")
    assert (job.error, job.started_at, store.status("j1")) == (None, None, JobStatus.RUNNING)


def test_stage_writes_are_fenced_by_the_lease(store: JobStore) -> None:
    store.create(spec(), ("fetch",))
    state = store.stage("j1", "fetch")
    token = store.acquire_lease("j1", "fetch", 30)
    assert token is not None
    state.status, state.cursor = StageStatus.RUNNING, {"next": 1}
    assert store.put_stage("j1", state, token)
    assert store.stage("j1", "fetch").cursor == {"next": 1}
    state.cursor = {"next": 2}
    assert not store.put_stage("j1", state, "someone-else")
    store.release_lease("j1", "fetch", token)
    assert not store.put_stage("j1", state, token)  # released: the old token writes nothing
    assert store.stage("j1", "fetch").cursor == {"next": 1}
    assert store.put_stage("j1", state)  # unfenced (the API, the reconciler): always
    assert store.stage("j1", "fetch").cursor == {"next": 2}


def test_issues_land_with_their_checkpoint_or_not_at_all(store: JobStore) -> None:
    """Fault `pause-past-lease` (tests/chaos): a run thawed after its lease expired recorded its batch's
    issues again, unfenced, next to the new owner's; now they commit with the fenced cursor write."""
    store.create(spec(), ("parse",))
    state = store.stage("j1", "parse")
    token = store.acquire_lease("j1", "parse", 30)
    assert token is not None
    first, late = Issue("parse", "a.md", "broken link"), Issue("parse", "b.md", "broken link")
    state.cursor = {"next": 1}
    assert store.put_stage("j1", state, token, issues=[first])
    state.cursor = {"next": 2}
    assert not store.put_stage("j1", state, "stale", issues=[late])
    assert store.issues("j1") == [first.to_json()] and store.stage("j1", "parse").cursor == {"next": 1}
    assert store.put_stage("j1", state, issues=[late])  # unfenced: always, issues too
    assert store.issues("j1") == [first.to_json(), late.to_json()]


def test_leases_hold_renew_release_and_lapse(store: JobStore) -> None:
    token = store.acquire_lease("j1", "fetch", 0.3)
    assert token is not None and store.acquire_lease("j1", "fetch", 0.3) is None
    assert not store.renew_lease("j1", "fetch", "wrong", 0.3)
    store.release_lease("j1", "fetch", "wrong")
    assert store.lease_held("j1", "fetch")
    assert store.renew_lease("j1", "fetch", token, 0.3)
    time.sleep(0.45)
    assert not store.lease_held("j1", "fetch") and not store.renew_lease("j1", "fetch", token, 0.3)
    other = store.acquire_lease("j1", "fetch", 30)
    assert other is not None and other != token
    store.release_lease("j1", "fetch", other)
    assert not store.lease_held("j1", "fetch")


def test_listing_and_the_active_set(store: JobStore) -> None:
    for job_id in ("a", "b", "c"):
        store.create(spec(job_id), ("fetch",))
        time.sleep(0.002)
    store.set_job("b", JobStatus.FAILED)
    assert [j.spec.job_id for j in store.list_jobs()] == ["c", "b", "a"]
    assert [j.spec.job_id for j in store.list_jobs(JobStatus.QUEUED, limit=1)] == ["c"]
    assert store.active_ids() == ["a", "b", "c"]  # a terminal status does not deactivate by itself
    store.deactivate("b")
    store.deactivate("never-was")
    assert store.active_ids() == ["a", "c"]
    store.set_job("b", JobStatus.QUEUED)  # retried: driven again, as the latest activity
    assert store.active_ids() == ["a", "c", "b"]


def test_issues(store: JobStore) -> None:
    store.create(spec(), ("parse",))
    issues = [Issue("parse", "a.md", "bad frontmatter"), Issue("parse", "b.png", "truncated", "warning", "media")]
    for issue in issues:
        store.add_issue("j1", issue)
    assert store.issues("j1") == [i.to_json() for i in issues] and store.issue_count("j1") == 2
    assert store.issues("other") == [] and store.issue_count("other") == 0


def test_the_same_issue_of_the_same_file_is_listed_once(store: JobStore) -> None:
    """A retried stage, a redelivered batch, one dead URL used nine times: each issue once, in first-seen order."""
    store.create(spec(), ("parse",))
    dead = Issue("source", "posts/a/index.md", "media not downloaded: https://h/x.png", "warning", "attachment")
    other_file = Issue("source", "posts/b/index.md", dead.message, "warning", "attachment")
    for _ in range(9):
        store.add_issue("j1", dead)
    store.add_issue("j1", other_file)
    store.add_issue("j1", dead)
    assert store.issues("j1") == [dead.to_json(), other_file.to_json()] and store.issue_count("j1") == 2


def test_events_in_order_after_an_id_and_capped(store: JobStore) -> None:
    store.create(spec(), ("parse",))
    store.event("j1", "progress", "parse 1/2", stage="parse", done=1, total=2)
    first = store.events("j1")
    assert [f["type"] for _i, f in first] == ["queued", "progress"]
    assert {k: v for k, v in first[1][1].items() if k != "ts"} == {
        "type": "progress", "message": "parse 1/2", "stage": "parse", "done": "1", "total": "2"}
    assert store.events("j1", after=first[0][0]) == first[1:]
    assert store.events("j1", count=1) == first[:1]
    for n in range(20):
        store.event("j1", "log", f"line {n}")
    kept = [f["message"] for _i, f in store.events("j1")]
    assert kept[-5:] == [f"line {n}" for n in range(15, 20)]  # at least the last events_max stay, in order
    ids = [i for i, _f in store.events("j1")]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))


def test_following_events_waits_for_new_ones(store: JobStore) -> None:
    store.create(spec(), ("parse",))
    (last, _fields), = store.events("j1")
    assert [f["type"] for _i, f in store.follow_events("j1", "0-0", block_ms=50)] == ["queued"]
    t0 = time.monotonic()
    assert list(store.follow_events("j1", last, block_ms=150)) == []
    assert time.monotonic() - t0 >= 0.1
    later = threading.Timer(0.1, lambda: store.event("j1", "done", "parse: done"))
    later.start()
    got = list(store.follow_events("j1", last, block_ms=5000))
    later.join()
    assert [f["type"] for _i, f in got] == ["done"]


def test_a_job_expires_with_everything_it_owns(store: JobStore) -> None:
    store.create(spec(), ("parse",), {"git_token": "t0k"})
    store.add_issue("j1", Issue("parse", "a.md", "bad"))
    time.sleep(TTL_S + 0.3)
    assert not store.exists("j1") and store.secrets("j1") == {} and store.issues("j1") == []
    assert store.events("j1") == [] and store.status("j1") is None
    with pytest.raises(KeyError):
        store.get("j1")
    assert store.list_jobs() == []  # and the index forgets it


def test_batches(store: JobStore) -> None:
    batches = store.batches("j1", "embed_text")
    batches.mark_sent([0, 1, 2])
    batches.mark_sent([])
    for n in (0, 0, 1):
        batches.mark_started(n)
    batches.mark_failed(1, "TransientError: busy")
    assert batches.failed() == {1: "TransientError: busy"}
    batches.mark_done(0)
    batches.mark_done(1)  # done after all (a retry): the failure no longer counts
    assert batches.done() == {0, 1} and batches.is_done(1) and not batches.is_done(2)
    assert batches.failed() == {} and batches.runs() == {0: 2, 1: 1} and set(batches.sent_at()) == {0, 1, 2}
    batches.mark_ended(0)  # one run of batch 0 ended in its task's hands, the other died under it
    assert batches.lost_runs(0) == 1 and batches.lost_runs(1) == 1 and batches.lost_runs(2) == 0
    token = store.acquire_lease("j1", "embed_text#2", 30)
    assert token is not None and batches.leased({0, 2}) == {2} and batches.leased(set()) == set()
    batches.mark_failed(2, "TransientError: still busy")
    batches.mark_failed(1, "late failure of a batch done since")
    assert batches.forget_failed() == [1, 2] and batches.failed() == {} and batches.forget_failed() == []
    assert batches.done() == {0, 1}


def test_the_keys_are_those_jobs_already_in_redis_use(store: JobStore) -> None:
    store.create(spec(project="p"), ("embed_text",), {"git_token": "t0k"})
    store.add_issue("j1", Issue("embed_text", "a.md", "bad"))
    store.acquire_lease("j1", "embed_text", 30)
    batches = store.batches("j1", "embed_text")
    batches.mark_sent([0])
    batches.mark_started(0)
    batches.mark_failed(0, "x")
    batches.mark_done(0)
    batches.mark_ended(0)
    batches.mark_failed(1, "x")
    assert stored_keys(store) == {
        "repobuild:job:j1", "repobuild:job:j1:secrets", "repobuild:job:j1:issues", "repobuild:job:j1:issues-seen",
        "repobuild:job:j1:events",
        "repobuild:lease:j1:embed_text", "repobuild:project:p:seq", "repobuild:jobs", "repobuild:jobs:active",
        "repobuild:job:j1:batches:embed_text:done", "repobuild:job:j1:batches:embed_text:failed",
        "repobuild:job:j1:batches:embed_text:sent", "repobuild:job:j1:batches:embed_text:runs",
        "repobuild:job:j1:batches:embed_text:ended",
    }
    keys = RedisKeys("rb:")
    assert (keys.lease("j", "embed_text#3"), keys.reconciler_lock) == ("rb:lease:j:embed_text#3", "rb:reconciler")


def test_long_messages_are_capped_where_they_are_written(store: JobStore) -> None:
    """A 2,000-entry shutil.Error once made a 496,685-character job error, and every GET /jobs/<id> that size."""
    huge = "".join(f"('/src/f{n}', '/dst/f{n}', 'No such file or directory'), " for n in range(5000))
    assert len(huge) > 200_000
    store.create(spec(), ("fetch",))
    state = store.stage("j1", "fetch")
    state.error = huge
    store.put_stage("j1", state)
    store.set_job("j1", JobStatus.FAILED, error={"stage": "fetch", "message": huge, "attempts": 1},
                  callback={"status": "failed", "error": huge})
    store.add_issue("j1", Issue("fetch", "p" * 50_000, huge))
    store.event("j1", "failed", huge, stage="fetch")
    store.batches("j1", "fetch").mark_failed(0, huge)
    job = store.get("j1")
    issue = store.issues("j1")[0]
    event = store.events("j1")[-1][1]
    kept = [job.stage("fetch").error, job.error["message"] if job.error else "",
            job.callback["error"] if job.callback else "", issue["message"], event["message"],
            store.batches("j1", "fetch").failed()[0]]
    for text in kept:
        assert text.startswith(huge[:4000]) and len(text) < 4100
        assert text.endswith(f"… [{len(huge) - 4000:,} more characters cut]")
    assert len(issue["path"]) < 1100 and issue["path"].startswith("p" * 1000)
    assert job.error is not None and job.error["stage"] == "fetch" and job.error["attempts"] == 1
    state.error = "short and whole"
    store.put_stage("j1", state)
    assert store.stage("j1", "fetch").error == "short and whole"


def test_a_stage_state_is_stored_as_its_json() -> None:
    """encode_stage skips to_json's deep copy: the string stored must still be exactly that JSON."""
    state = StageState(name="embed_text", status=StageStatus.RUNNING, cursor={"done": [1, 2], "at": {"n": 3}},
                       summary={"items": [("a", 1)]}, resumed_from={"cursor": None}, error="boom", enqueued_at=1.5)
    assert job_hash.encode_stage(state) == json.dumps(state.to_json())
    assert job_hash.decode_stage(job_hash.encode_stage(state)) == job_hash.decode_stage(json.dumps(state.to_json()))
