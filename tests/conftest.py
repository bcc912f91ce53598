"""Fixtures for the three tiers: a private redis-server, real worker processes, a real HTTP API."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

import httpx
import pytest
from werkzeug.serving import make_server

from api.app import create_app
from api.cli.local_services import PrivateRedis, WorkerProcess
from pipeline.http.address_policy import AddressPolicy
from pipeline.plans import job_is_over
from pipeline.settings import Settings
from pipeline.stores.jobs import JobStore, JobView
from pipeline.stores.jobs_redis import RedisJobStore
from tests.chaos.report import RECORDS, FaultRecord, print_summary
from tests.fakes.gitserver import GitHttpServer, empty_remote
from tests.fakes.listeners import Canary
from worker.factory import create_celery
from worker.repobuild_app import RepobuildCelery

ROOT = Path(__file__).resolve().parent.parent
# CI clones the project with shared/ beside it; REPOBUILD_CORPORA points elsewhere when it is not.
CORPORA = Path(os.environ.get("REPOBUILD_CORPORA") or ROOT.parent / "shared" / "corpora")
DEMO_REPO = ROOT / "samples" / "demo-repo"
# What the fake git and GitHub servers take; tests assert it never shows in job state, errors or callbacks.
GIT_TOKEN = "tok-7d21e0"
# Tests reach their own servers on 127.0.0.1 through the operator's allowlist (REPOBUILD_ALLOW_HOSTS), never by
# switching the outbound address policy off; every other non-public address stays refused.
ALLOW_LOCAL = ("127.0.0.1",)
LOCAL_POLICY = AddressPolicy.of(ALLOW_LOCAL)

P = ParamSpec("P")


class Stoppable(Protocol):
    def stop(self) -> None: ...


S = TypeVar("S", bound=Stoppable)


def stopped_at_teardown(make: Callable[P, S]) -> Iterator[Callable[P, S]]:
    """For a fixture that hands out a factory: `make`, and every server it made stopped when the test ends."""
    made: list[S] = []

    def tracked(*args: P.args, **kwargs: P.kwargs) -> S:
        server = make(*args, **kwargs)
        made.append(server)
        return server

    yield tracked
    for server in made:
        server.stop()


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    with PrivateRedis() as server:
        yield server


@pytest.fixture
def settings(redis_server: PrivateRedis, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_server.url,
        artifacts=str(tmp_path / "artifacts"),
        output=str(tmp_path / "out"),
        temp_dir=str(tmp_path),
        lease_ttl_s=3.0,
        reconcile_interval_s=1.0,
        max_retries=4,
        retry_backoff_max_s=2,
        callback_timeout_s=3.0,
        allow_hosts=ALLOW_LOCAL,
        metrics_port=0,  # no worker exporter unless a test asks for one (on a free port, not the fixed default)
        # what tests submit through the API: their own folders, the samples and the corpora
        local_source_roots=(str(tmp_path), str(DEMO_REPO), str(CORPORA)),
    )


@pytest.fixture
def celery_app(settings: Settings) -> RepobuildCelery:
    return create_celery(settings)


@pytest.fixture
def store(celery_app: RepobuildCelery) -> RedisJobStore:
    """The app's own store: the real Redis one, which the tests of durability need."""
    store = celery_app.store
    assert isinstance(store, RedisJobStore)
    return store


class Workers:
    """Start worker processes with given settings; all stopped (or killed) at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[WorkerProcess] = []

    def start(self, settings: Settings, concurrency: int = 2) -> WorkerProcess:
        n = len(self.started)
        w = WorkerProcess(settings.to_env(), concurrency=concurrency,
                          log_path=str(self.tmp_path / f"worker-{n}.log"), name=f"w{n}-{time.time_ns()}@%h")
        w.start()
        self.started.append(w)
        wait_ready(create_celery(settings), w)
        return w

    def stop_all(self) -> None:
        for w in self.started:
            w.stop(timeout=10)


def wait_ready(app: RepobuildCelery, w: WorkerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not w.alive():
            raise RuntimeError(f"worker exited: {Path(w.log_path or '').read_text()[-3000:]}")
        replies = app.control.ping(timeout=0.5)
        if any(w.name.split("@")[0] in name for reply in replies for name in reply):
            return
    raise RuntimeError("worker did not become ready")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    ws = Workers(tmp_path)
    yield ws
    ws.stop_all()


class ApiServer:
    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> None:
        self.client.close()
        self.server.shutdown()


@pytest.fixture
def api_factory() -> Iterator[Callable[[Settings], ApiServer]]:
    yield from stopped_at_teardown(ApiServer)


def wait_job(store: JobStore, job_id: str, timeout: float = 120,
             until: Callable[[JobView], bool] | None = None) -> JobView:
    """Poll until the job is terminal and its notify stage is over (or `until` holds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get(job_id)
        if until is not None:
            if until(job):
                return job
        elif job_is_over(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not finished in {timeout}s: {store.get(job_id)}")


class CallbackServer:
    """A real HTTP receiver for callbacks, answering scripted statuses (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        import http.server  # noqa: PLC0415

        self.statuses = list(statuses or [])
        self.requests: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = outer.statuses.pop(0) if outer.statuses else 200
                entry = {"body": body, "headers": dict(self.headers), "status": status, "path": self.path}
                outer.requests.append(entry)
                if status < 300:
                    outer.accepted.append(entry)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/callback"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()


@pytest.fixture
def callback_server() -> Iterator[Callable[..., CallbackServer]]:
    yield from stopped_at_teardown(CallbackServer)


@pytest.fixture
def canary() -> Iterator[Canary]:
    """A listener on 127.0.0.2, an address the tests' allowlist leaves refused: it counts whatever reaches it."""
    server = Canary()
    yield server
    server.stop()


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[GitHttpServer]:
    """A git smart-HTTP server with one empty bare repository, `site.git` (HEAD on main), taking only GIT_TOKEN."""
    server = empty_remote(tmp_path, GIT_TOKEN)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """A private SeaweedFS S3 server (tests.fakes.seaweed.S3Server); one per session, it takes a second to start."""
    from tests.fakes.seaweed import seaweed_server  # noqa: PLC0415 - only sessions that use S3 pay for it

    with seaweed_server() as server:
        yield server


# The chaos table, printed once for the session. `make test` runs on both cores (pytest-xdist): each worker
# process hands its records to the controller at its end, and the controller prints them.
class _ChaosRecordsOfWorkers:
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        RECORDS.extend(FaultRecord(**r) for r in getattr(node, "workeroutput", {}).get("chaos_records", []))


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_ChaosRecordsOfWorkers(), "chaos-records-of-workers")


def pytest_sessionfinish(session: pytest.Session) -> None:
    output = getattr(session.config, "workeroutput", None)
    if output is not None:  # an xdist worker
        output["chaos_records"] = [asdict(r) for r in RECORDS]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    print_summary(terminalreporter)
