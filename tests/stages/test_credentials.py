"""Tier 1: credentials are split off every URL form and every field at the edge, and put back only where sent."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from api.schemas import JobRequest, ProcessRequest
from pipeline.http.credentials import (
    GIT_TOKEN,
    URL_LOGGERS,
    MaskCredentials,
    keep_credentials_out_of_logs,
    mask_text,
    original_key,
    restore,
    split_spec,
    split_url,
)
from pipeline.models import JobSpec, SourceSpec
from tests.fakes.openai_server import OpenAIServer

SPLITS = [
    # http(s): the whole userinfo goes (a user name alone is a token there), and it is the git token
    ("https://user:tok-1@host/o/r.git", "https://host/o/r.git", "tok-1"),
    ("https://tok-2@github.com/o/r", "https://github.com/o/r", "tok-2"),
    ("http://x-access-token:tok-3@127.0.0.1:8080/r.git", "http://127.0.0.1:8080/r.git", "tok-3"),
    ("HTTPS://u:p%40ss@[::1]:8443/r.git", "https://[::1]:8443/r.git", "p@ss"),
    ("https://user:p@ss@host/x", "https://host/x", "p@ss"),
    ("  https://u:tok-4@h/x  ", "https://h/x", "tok-4"),
    # other schemes keep the account name (ssh's `git@`) and lose the password
    ("ssh://deploy:pass-1@host:22/site.git", "ssh://deploy@host:22/site.git", None),
    ("git://mirror:pass-2@host/site.git", "git://mirror@host/site.git", None),
    ("ftp://u:pass-3@host/f", "ftp://u@host/f", None),
    ("user:pass-4@host:path/r.git", "user@host:path/r.git", None),
    # credential parameters of the query and the fragment, whatever their case or spelling
    ("https://host/x?access_token=q1&page=2", "https://host/x?page=2", None),
    ("https://host/x?page=2&token=q2", "https://host/x?page=2", None),
    ("https://gitlab/x.git?private_token=q3", "https://gitlab/x.git", None),
    ("https://api/x?api_key=q4&apikey=q5&key=q6&sig=q7", "https://api/x", None),
    ("https://h/o?X-Amz-Algorithm=A&X-Amz-Credential=q8&X-Amz-Date=D&X-Amz-Signature=q9&X-Amz-Security-Token=q10",
     "https://h/o?X-Amz-Algorithm=A&X-Amz-Date=D", None),
    ("https://fn.example/api/hook?code=q11", "https://fn.example/api/hook", None),
    ("https://h/cb?clientSecret=q12&password=q13", "https://h/cb", None),
    ("https://h/cb#access_token=q14&state=1", "https://h/cb#state=1", None),
    ("https://u:tok-5@h/x?token=q15", "https://h/x", "tok-5"),
]

UNCHANGED = ["https://host/o/r.git", "ssh://git@github.com/o/r.git", "git@github.com:o/r.git", "git://host/r.git",
             "https://h/x?page=1&sort=new", "http://127.0.0.1:9/callback", "/srv/repos/site", "file:///srv/r",
             "a note that mentions a key=value pair", ""]


@pytest.mark.parametrize(("given", "stored", "token"), SPLITS)
def test_every_form_loses_its_credentials(given: str, stored: str, token: str | None) -> None:
    split = split_url(given)
    assert (split.url, split.token, split.is_url) == (stored, token, True)
    assert restore(split.url, given) == given.strip()


@pytest.mark.parametrize("given", UNCHANGED)
def test_a_value_without_credentials_is_left_alone(given: str) -> None:
    assert split_url(given).url == given
    assert split_url(given).token is None


def test_text_is_masked_wherever_it_names_a_credential() -> None:
    message = ("cannot reach https://u:p@ss@h/x?token=abc&a=1 (then git://u:pw@h:1/x): refused; mail bob@x.org, "
               "see http://host and 'https://h/?access_token=zz'")
    assert mask_text(message) == ("cannot reach https://h/x?token=***&a=1 (then git://h:1/x): refused; mail bob@x.org, "
                                  "see http://host and 'https://h/?access_token=***'")
    split = split_url("see https://u:secret-1@h/x")
    assert (split.url, split.is_url) == ("see https://h/x", False)


def test_restore_gives_back_only_what_the_split_made() -> None:
    original = "https://hook:pw@cb.example/in?token=t"
    stored = split_url(original).url
    assert restore(stored, original) == original
    assert restore("https://elsewhere.example/in", original) == "https://elsewhere.example/in"
    assert restore(stored, None) == stored


def test_split_spec_walks_every_field_and_picks_the_git_token() -> None:
    spec = JobSpec(job_id="j", task="deploy-repo", source=SourceSpec(url="ssh://r:pw-src@h/x.git"),
                   callback_url="https://hook:pw-cb@cb.example/in?token=t-cb",
                   options={"repoUrl": "https://x-access-token:tok-push@h/site.git",
                            "repoInfo": {"path": "https://oauth2:tok-info@h/other.git", "distPath": "dist"},
                            "mirrors": ["git://m:pw-m@h/x", "https://h/y"], "depth": 1,
                            "webhookSecret": "s-field", "maxTokens": 5, "brief": "see https://u:pw-b@h/z"})
    clean, secrets = split_spec(spec)
    assert clean.source is not None and clean.source.url == "ssh://r@h/x.git"
    assert clean.callback_url == "https://cb.example/in"
    assert clean.options == {"repoUrl": "https://h/site.git",
                             "repoInfo": {"path": "https://h/other.git", "distPath": "dist"},
                             "mirrors": ["git://m@h/x", "https://h/y"], "depth": 1, "maxTokens": 5,
                             "brief": "see https://h/z"}
    assert secrets == {
        original_key("source"): "ssh://r:pw-src@h/x.git",
        original_key("callback_url"): "https://hook:pw-cb@cb.example/in?token=t-cb",
        original_key("options.repoUrl"): "https://x-access-token:tok-push@h/site.git",
        original_key("options.repoInfo.path"): "https://oauth2:tok-info@h/other.git",
        original_key("options.mirrors.0"): "git://m:pw-m@h/x",
        original_key("options.webhookSecret"): "s-field",
        GIT_TOKEN: "tok-push",  # the source (ssh) has no token to give; the push URL comes next
    }
    assert spec.options["repoUrl"].endswith("tok-push@h/site.git")  # the request's own copy is not changed
    assert split_spec(spec, "tok-field")[1][GIT_TOKEN] == "tok-field"  # the token field comes first


def test_both_bodies_store_no_credential() -> None:
    jobs = JobRequest(task="process-all", source="git://r:pw-1@h/x.git", token="tok-1",
                      callback_url="http://hook:pw-2@cb.example/in",
                      options={"remoteUrl": "ssh://d:pw-3@h/site.git", "siteUrl": "https://h/?access_token=q-1"})
    process = ProcessRequest(jobId="p", task="deploy-repo", callbackUrl="https://cb.example/in?token=q-2",
                             data={"repoInfo": {"path": "https://oauth2:tok-2@h/r.git"}, "gitToken": "tok-3",
                                   "remoteUrl": "https://tok-4@h/site.git"})
    for request, secrets in ((jobs, ("pw-1", "tok-1", "pw-2", "pw-3", "q-1")),
                             (process, ("tok-2", "tok-3", "q-2", "tok-4"))):
        spec, found = request.to_spec()
        stored = spec.model_dump_json()
        assert not [s for s in secrets if s in stored], stored
        assert {s for s in secrets if any(s in v for v in found.values())} == set(secrets)
    spec, _ = jobs.to_spec()
    assert split_spec(spec) == (spec, {})  # what was split once has nothing left to split
    _, found = process.to_spec()
    assert found[GIT_TOKEN] == "tok-3"
    assert found[original_key("source")] == found[original_key("options.repoInfo.path")] == \
        "https://oauth2:tok-2@h/r.git"
    without_field = ProcessRequest(jobId="p", task="deploy-repo", callbackUrl="https://cb.example/in",
                                   data={"repoInfo": {"path": "https://oauth2:tok-2@h/r.git"}})
    assert without_field.to_spec()[1][GIT_TOKEN] == "tok-2"  # repoInfo.path is the source: its token clones it


class _Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_a_request_url_with_credentials_never_reaches_a_log(receiver: str, tmp_path: Path) -> None:
    """The worker's set-up: root at INFO into a file, as `celery worker --loglevel=INFO` makes it."""
    root = logging.getLogger()
    handler = logging.FileHandler(tmp_path / "worker.log")
    saved = (root.level, {name: logging.getLogger(name).level for name in URL_LOGGERS})
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        keep_credentials_out_of_logs([handler])
        httpx.post(f"http://hook:pw-log-1@{receiver}/cb?token=q-log-1", content=b"{}")
        with OpenAIServer() as llm:  # the OpenAI SDK brings its own copy of httpx, with its own logger
            base = llm.base_url.replace("http://", "http://proxy:pw-log-4@")
            openai.OpenAI(base_url=base, api_key="unused").embeddings.create(input="x", model="m")
            assert llm.requests_to("/v1/embeddings")
        try:
            raise ConnectionError("cannot reach https://u:pw-log-2@h/x?access_token=q-log-2")
        except ConnectionError:
            logging.getLogger("repobuild.worker").exception("failed for git://u:pw-log-3@h/x")
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(saved[0])
        for name, level in saved[1].items():
            logging.getLogger(name).setLevel(level)
    log = (tmp_path / "worker.log").read_text()
    assert "HTTP Request" not in log  # held at WARNING
    assert "failed for git://h/x" in log and "cannot reach https://h/x?access_token=***" in log
    assert not [s for s in ("pw-log-1", "q-log-1", "pw-log-2", "q-log-2", "pw-log-3", "pw-log-4")
                if s in log], log
    assert sum(isinstance(f, MaskCredentials) for f in handler.filters) == 1
