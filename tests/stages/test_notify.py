"""Pure tier: callback payloads, signing, and one delivery attempt against a real local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.catalog import FAILED_UPLOAD
from pipeline.errors import PermanentError, TransientError
from pipeline.http import callbacks
from pipeline.models import JSON, JobStatus, StageState, StageStatus
from pipeline.stages import notify
from pipeline.stages.context import LocalContext
from pipeline.stores.jobs import JobView
from tests.conftest import ALLOW_LOCAL, LOCAL_POLICY, CallbackServer
from tests.fakes.listeners import SilentServer
from tests.stages.test_build_db import make_ctx

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC).timestamp()
LOGS = [callbacks.log_entry("j1", "fetch: started", T0), callbacks.log_entry("j1", "boom", T0 + 1, error=True)]

Server = Callable[..., CallbackServer]
# one delivery attempt, to this test's receivers on 127.0.0.1 (the operator's allowlist lets them through)
deliver = functools.partial(callbacks.deliver, policy=LOCAL_POLICY)


@pytest.fixture(scope="module")
def shared_server() -> Iterator[CallbackServer]:
    server = CallbackServer()
    yield server
    server.stop()


@pytest.fixture
def callback_server(shared_server: CallbackServer) -> Server:
    """conftest's receiver, one per module (stopping one takes half a second), reset for each test."""
    def make(statuses: list[int] | None = None) -> CallbackServer:
        shared_server.statuses = list(statuses or [])
        shared_server.requests.clear()
        shared_server.accepted.clear()
        return shared_server

    return make


def verify(secret: str, body: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


def test_payload_shapes() -> None:
    ok = callbacks.success_payload("j1", {"counts": {"posts": 3}}, T0, T0 + 2.5, LOGS)
    assert ok == {"jobId": "j1", "status": "completed", "result": {"counts": {"posts": 3}},
                  "processedAt": "2026-01-02T03:04:08.178Z", "duration": 2500, "logs": LOGS}
    failed = callbacks.failure_payload("j1", "Unknown task type: x", datetime.fromtimestamp(T0, UTC), LOGS)
    assert failed == {"jobId": "j1", "status": "failed", "error": "Unknown task type: x",
                      "processedAt": "2026-01-02T03:04:05.678Z", "logs": LOGS}
    assert LOGS[0] == {"type": "info", "jobId": "j1", "timestamp": "2026-01-02T03:04:05.678Z",
                       "message": "fetch: started"}
    assert LOGS[1]["type"] == "error"


def test_sign() -> None:
    body = b'{"a":1}'
    assert callbacks.sign(body, "k") == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert verify("k", body, callbacks.sign(body, "k"))


def test_delivery_is_signed_and_identified(callback_server: Server) -> None:
    cb = callback_server()
    payload = callbacks.success_payload("j1", {"title": "Привет"}, T0, T0 + 1, LOGS)
    assert deliver(cb.url, payload, secret="s3cret", timeout_s=5, delivery_id="j1:completed") == 200
    [req] = cb.requests
    assert json.loads(req["body"]) == payload
    assert "Привет".encode() in req["body"]
    headers = {k.lower(): v for k, v in req["headers"].items()}
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "repobuild"
    assert headers["x-repobuild-delivery"] == "j1:completed"
    assert verify("s3cret", req["body"], headers["x-repobuild-signature"])


def test_no_secret_no_signature(callback_server: Server) -> None:
    cb = callback_server([204])
    assert deliver(cb.url, {"status": "failed"}, secret=None, timeout_s=5, delivery_id="d") == 204
    assert "x-repobuild-signature" not in {k.lower() for k in cb.requests[0]["headers"]}


@pytest.mark.parametrize(("status", "error"), [(500, TransientError), (503, TransientError),
                                               (408, TransientError), (429, TransientError),
                                               (400, PermanentError), (404, PermanentError),
                                               (301, PermanentError)])
def test_status_classification(callback_server: Server, status: int, error: type[Exception]) -> None:
    cb = callback_server([status])
    with pytest.raises(error, match=str(status)):
        deliver(cb.url, {"status": "completed"}, secret="s", timeout_s=5, delivery_id="d")
    assert len(cb.requests) == 1  # one attempt: retrying is the task policy's job


def test_refusal_message_names_the_url_without_credentials(callback_server: Server) -> None:
    cb = callback_server([400])
    url = cb.url.replace("http://", "http://user:hunter22@") + "?token=abc123"
    with pytest.raises(PermanentError) as info:
        deliver(url, {"status": "completed"}, secret=None, timeout_s=5, delivery_id="d")
    assert str(info.value) == f"callback to {cb.url} refused with 400"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_is_transient() -> None:
    with pytest.raises(TransientError, match="ConnectError"):
        deliver(f"http://127.0.0.1:{free_port()}/cb", {"status": "completed"}, secret=None, timeout_s=2,
                delivery_id="d")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    server = SilentServer()
    yield server.url("/cb")
    server.stop()


def test_timeout_is_transient(silent_server: str) -> None:
    with pytest.raises(TransientError, match="timed out"):
        deliver(silent_server, {"status": "completed"}, secret=None, timeout_s=0.3, delivery_id="d")


def test_unusable_url_is_permanent() -> None:
    with pytest.raises(PermanentError):
        deliver("ftp://example.org/cb", {"status": "completed"}, secret=None, timeout_s=1, delivery_id="d")


def test_redact() -> None:
    value = {"logs": [{"message": "clone https://x:ghp_SECRET@github.com failed"}], "ghp_SECRET": 1, "n": 2}
    assert callbacks.redact(value, ["ghp_SECRET", None, "ab"]) == {
        "logs": [{"message": "clone https://x:***@github.com failed"}], "***": 1, "n": 2}


def notify_ctx(tmp_path: Path, url: str | None, payload: dict[str, object] | None = None) -> LocalContext:
    ctx = make_ctx(tmp_path, "j1", stage="notify", callback_url=url)
    ctx.settings = ctx.settings.with_(callback_secret="s3cret", callback_timeout_s=5.0, allow_hosts=ALLOW_LOCAL)
    ctx.secrets["git_token"] = "ghp_tokenvalue"
    if payload is not None:
        ctx.artifacts.put_json(ctx.key("payload.json"), payload)
    return ctx


def test_notify_without_callback_url(tmp_path: Path) -> None:
    result = notify.run(notify_ctx(tmp_path, None))
    assert result.finished and result.summary == {"delivered": False}


def test_notify_delivers_same_bytes_on_every_attempt(tmp_path: Path, callback_server: Server) -> None:
    cb = callback_server([503, 200])
    payload = callbacks.failure_payload("j1", "clone of https://ghp_tokenvalue@github.com/x failed", T0, LOGS)
    ctx = notify_ctx(tmp_path, cb.url, payload)
    with pytest.raises(TransientError):
        notify.run(ctx)
    result = notify.run(ctx)
    assert result.summary == {"delivered": True, "http_status": 200, "delivery_id": "j1:failed", "url": cb.url}
    first, second = cb.requests
    assert first["body"] == second["body"]
    assert first["headers"]["X-Repobuild-Delivery"] == second["headers"]["X-Repobuild-Delivery"] == "j1:failed"
    assert verify("s3cret", second["body"], second["headers"]["X-Repobuild-Signature"])
    body = second["body"].decode()
    assert "ghp_tokenvalue" not in body and "s3cret" not in body
    assert json.loads(body)["error"] == "clone of https://***@github.com/x failed"


def test_notify_refused_is_permanent(tmp_path: Path, callback_server: Server) -> None:
    cb = callback_server([400])
    ctx = notify_ctx(tmp_path, cb.url, callbacks.success_payload("j1", {}, T0, T0, []))
    with pytest.raises(PermanentError, match="refused with 400"):
        notify.run(ctx)


# What the worker's event stream holds: progress events are not logs; failures, retries and error logs are errors.
EVENTS = [{"type": "queued", "message": "job queued: process-all", "ts": repr(T0)},
          {"type": "progress", "message": "parse 1/2", "ts": repr(T0 + 0.5), "stage": "parse"},
          {"type": "retry", "message": "fetch: TransientError: reset (attempt 1)", "ts": repr(T0 + 1),
           "stage": "fetch"},
          {"type": "log", "message": "parse: 3 posts", "ts": repr(T0 + 1.25), "stage": "parse", "level": "info"},
          {"type": "log", "message": "bad image", "ts": repr(T0 + 1.5), "stage": "embed_images", "level": "error"}]
LOGGED = [{"type": "info", "jobId": "j1", "timestamp": "2026-01-02T03:04:05.678Z",
           "message": "job queued: process-all"},
          {"type": "error", "jobId": "j1", "timestamp": "2026-01-02T03:04:06.678Z",
           "message": "fetch: TransientError: reset (attempt 1)"},
          {"type": "info", "jobId": "j1", "timestamp": "2026-01-02T03:04:06.928Z", "message": "parse: 3 posts"},
          {"type": "error", "jobId": "j1", "timestamp": "2026-01-02T03:04:07.178Z", "message": "bad image"}]


def reported(tmp_path: Path, server: CallbackServer, status: JobStatus, *, finished_at: float | None = T0 + 2.5,
             error: JSON | None = None, result: JSON | None = None) -> JSON:
    """The body notify delivers for a job view with EVENTS."""
    ctx = notify_ctx(tmp_path, server.url)
    stages = [StageState(name="fetch", status=StageStatus.DONE), StageState(name="notify")]
    ctx.job_view = JobView(spec=ctx.spec, status=status, stages=stages, created_at=T0 - 1, updated_at=T0 + 3,
                           started_at=T0, finished_at=finished_at, error=error, result=result, callback=None)
    ctx.job_events = EVENTS
    assert notify.run(ctx).summary["delivered"] is True
    body: JSON = json.loads(server.requests[-1]["body"])
    return body


def test_notify_reports_a_completed_job(tmp_path: Path, callback_server: Server) -> None:
    body = reported(tmp_path, callback_server(), JobStatus.COMPLETED, result={"counts": {"posts": 3}})
    # Every timestamp as JavaScript's toISOString writes it (milliseconds, Z), as the original's clients read them.
    assert body == {"jobId": "j1", "status": "completed", "result": {"counts": {"posts": 3}},
                    "processedAt": "2026-01-02T03:04:08.178Z", "duration": 2500, "logs": LOGGED}


def test_notify_reports_a_failed_upload(tmp_path: Path, callback_server: Server) -> None:
    info = {"published": False, "failedUploads": 1, "failedKeys": ["projects/p/j1/posts.json"]}
    make_ctx(tmp_path, "j1").artifacts.put_json(FAILED_UPLOAD.key("j1"), info)
    body = reported(tmp_path, callback_server(), JobStatus.FAILED,
                    error={"stage": "upload", "message": "1 file(s) failed to upload", "attempts": 3})
    assert body == {"jobId": "j1", "status": "failed", "error": "1 file(s) failed to upload",
                    "processedAt": "2026-01-02T03:04:08.178Z", "logs": LOGGED, "publishInfo": info}


def test_notify_reports_a_cancelled_job(tmp_path: Path, callback_server: Server) -> None:
    body = reported(tmp_path, callback_server(), JobStatus.CANCELLED, finished_at=None)
    assert (body["status"], body["error"]) == ("failed", "Job cancelled")
    assert body["processedAt"] == "2026-01-02T03:04:08.678Z"  # not finished: when the job was last updated
