"""Tier 1: every outbound request made for a caller is held to the address policy, with timeouts, and carries
credentials only to the hosts they are meant for. Real local servers on loopback only: the refused address is
127.0.0.2, where a canary listens to prove no connection reached it."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest
from dulwich.repo import Repo

from pipeline.errors import TransientError
from pipeline.http import callbacks
from pipeline.http.address_policy import AddressPolicy, AddressRefused
from pipeline.http.safe_fetch import fetch_image
from pipeline.http.token_scope import token_for
from pipeline.models import JobSpec, SourceSpec
from pipeline.settings import Settings
from pipeline.sources.git import clone
from pipeline.sources.git_write import commit_tree, push
from pipeline.sources.github_template import generate_from_template, wait_until_cloneable
from pipeline.stages import fetch, source
from pipeline.stages.context import LocalContext
from pipeline.stores.artifacts import LocalArtifactStore
from tests.conftest import ALLOW_LOCAL, LOCAL_POLICY
from tests.fakes.gitserver import GitHttpServer, make_git_repo
from tests.fakes.listeners import Canary, LocalHTTPServer, QuietHandler, SilentServer
from tests.fakes.wordpress_site import item, wxr

LOCAL = LOCAL_POLICY
SERVICE_TOKEN = "ghp-service-wide-4e1d"
JOB_TOKEN = "job-own-token-77b2"


class Redirector(LocalHTTPServer):
    """HTTP on 127.0.0.1 that answers every request with a 302 to `target` + the request path."""

    def __init__(self, target: str) -> None:
        class Handler(QuietHandler):
            def _redirect(self) -> None:
                self.send_response(302)
                self.send_header("Location", target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _redirect  # noqa: N815

        super().__init__(Handler)


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    path = tmp_path / "origin"
    make_git_repo(path, {"a.md": b"# A\n"})
    return path


def test_a_git_server_that_never_answers_fails_within_the_timeout(tmp_path: Path) -> None:
    silent = SilentServer()
    url = f"http://127.0.0.1:{silent.port}/site.git"
    work = tmp_path / "work"
    work.mkdir()
    (work / "a.md").write_text("# A\n")
    commit_tree(work, "one", timestamp=1)
    try:
        for attempt in (lambda: clone(url, tmp_path / "c", policy=LOCAL, timeout_s=1),
                        lambda: push(work, url, policy=LOCAL, timeout_s=1),
                        lambda: wait_until_cloneable(url, policy=LOCAL, request_timeout_s=1, timeout=1.5,
                                                     interval=0.1)):
            started = time.monotonic()
            with pytest.raises(TransientError, match="did not answer within 1s|not cloneable") as err:
                attempt()
            assert time.monotonic() - started < 8, err.value
    finally:
        silent.stop()


def test_redirects_into_refused_addresses_are_not_followed(tmp_path: Path, canary: Canary, origin: Path) -> None:
    hop = Redirector(canary.url())
    try:
        with pytest.raises(AddressRefused, match="127.0.0.2"):
            clone(f"{hop.url}/site.git", tmp_path / "c", policy=LOCAL, timeout_s=5)
        with pytest.raises(AddressRefused, match="imageUrl: address refused: 127.0.0.2"):
            fetch_image(f"{hop.url}/x.png", policy=LOCAL, max_bytes=1000)
        with pytest.raises(AddressRefused, match="127.0.0.2"):
            generate_from_template("o/t", "new", token=JOB_TOKEN, api_base=hop.url, policy=LOCAL)
        assert canary.connections == 0
        # the canary works: allowed, the same clone reaches it
        with pytest.raises(Exception):  # noqa: B017 - the canary hangs up; only reaching it matters
            clone(f"{hop.url}/site.git", tmp_path / "d", policy=AddressPolicy.of(["127.0.0.0/8"]), timeout_s=5)
        assert canary.connections >= 1
    finally:
        hop.stop()


def test_requests_to_refused_addresses_are_never_sent(tmp_path: Path, canary: Canary, origin: Path) -> None:
    spellings = [canary.url(), f"http://2130706434:{canary.port}/", f"http://0x7f.0.0.2:{canary.port}/",
                 f"http://127.2:{canary.port}/", f"http://[::ffff:127.0.0.2]:{canary.port}/"]
    for url in spellings:
        with pytest.raises(AddressRefused, match="refused"):
            callbacks.deliver(url, {"jobId": "j"}, secret="s3cret", timeout_s=2, delivery_id="j:1", policy=LOCAL)
        with pytest.raises(AddressRefused, match="refused"):
            clone(f"{url}site.git", tmp_path / "c", policy=LOCAL, timeout_s=2)
        with pytest.raises(AddressRefused, match="refused"):
            push(origin, f"{url}site.git", policy=LOCAL, timeout_s=2)
        with pytest.raises(AddressRefused, match="refused"):
            fetch_image(f"{url}x.png", policy=LOCAL, max_bytes=10)
    # without a policy, only public addresses: even the allowed 127.0.0.1 is refused
    with pytest.raises(AddressRefused):
        callbacks.deliver("http://127.0.0.1:9/cb", {}, secret=None, timeout_s=2, delivery_id="x")
    assert canary.connections == 0


# ------------------------------------------------------------------------------------------------ tokens


def settings_for(tmp_path: Path, **changes: Any) -> Settings:
    return Settings(artifacts=str(tmp_path / "art"), output=str(tmp_path / "out"), temp_dir=str(tmp_path),
                    allow_hosts=ALLOW_LOCAL, github_token=SERVICE_TOKEN, **changes)


def basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()


def test_the_service_token_is_not_sent_to_a_git_host_that_is_not_github(tmp_path: Path, origin: Path) -> None:
    server = GitHttpServer({"site": origin})
    try:
        settings = settings_for(tmp_path)  # GitHub is api.github.com: 127.0.0.1 is somebody else's host
        spec = JobSpec(job_id="j", task="process-all", source=SourceSpec(url=server.url_for("site")))
        ctx = LocalContext(job_id="j", stage="fetch", spec=spec, settings=settings,
                           artifacts=LocalArtifactStore(settings.artifacts))
        fetch.run(ctx)
        assert server.authorizations and set(server.authorizations) == {""}

        xml = wxr("https://blog.example", item(1, "post", "publish", title="First", slug="first", content="x"))
        remote = tmp_path / "remote.git"
        Repo.init_bare(str(remote), mkdir=True, default_branch=b"main").close()
        url = server.add_repo("pushed.git", remote)
        push_spec = JobSpec(job_id="w", task="wp-import", options={"wpXml": base64.b64encode(xml).decode(),
                                                                   "remoteUrl": url})
        server.authorizations.clear()
        source.run(LocalContext(job_id="w", stage="source", spec=push_spec, settings=settings,
                                artifacts=LocalArtifactStore(settings.artifacts)))
        assert server.authorizations and set(server.authorizations) == {""}
    finally:
        server.stop()


def test_the_service_token_goes_to_the_configured_github(tmp_path: Path, origin: Path) -> None:
    server = GitHttpServer({"site": origin}, token=SERVICE_TOKEN)
    try:
        settings = settings_for(tmp_path, github_api_url=f"http://127.0.0.1:{server.port}/api/v3")
        spec = JobSpec(job_id="j", task="process-all", source=SourceSpec(url=server.url_for("site")))
        fetch.run(LocalContext(job_id="j", stage="fetch", spec=spec, settings=settings,
                               artifacts=LocalArtifactStore(settings.artifacts)))
        assert basic(SERVICE_TOKEN) in server.authorizations
    finally:
        server.stop()


def test_which_token_goes_where() -> None:
    settings = Settings(github_token=SERVICE_TOKEN, github_api_url="https://ghe.corp/api/v3")
    spec = JobSpec(job_id="j", task="wp-import", source=SourceSpec(url="https://git.team.example/a/b.git"),
                   options={"remoteUrl": "https://push.team.example/a/c.git"})
    bare = JobSpec(job_id="j", task="process-all", source=SourceSpec(url="https://evil.example/x.git"))

    def to(url: str, job: JobSpec, job_token: str | None) -> str | None:
        return token_for(url, job_token=job_token, spec=job, settings=settings)

    # the service token: GitHub only (the configured API's host and github.com)
    assert to("https://evil.example/x.git", bare, None) is None
    assert to("https://github.com/o/r.git", bare, None) == SERVICE_TOKEN
    assert to("https://ghe.corp/o/r.git", bare, None) == SERVICE_TOKEN
    assert to("https://ghe.corp.evil.example/o/r.git", bare, None) is None
    # a caller's token: the hosts its job names, and GitHub; never replaced by the service's
    assert to("https://git.team.example/a/b.git", spec, JOB_TOKEN) == JOB_TOKEN
    assert to("https://push.team.example/a/c.git", spec, JOB_TOKEN) == JOB_TOKEN
    assert to("https://ghe.corp/api/v3", spec, JOB_TOKEN) == JOB_TOKEN
    assert to("https://elsewhere.example/x.git", spec, JOB_TOKEN) is None
    assert to("https://elsewhere.example/x.git", spec, None) is None
