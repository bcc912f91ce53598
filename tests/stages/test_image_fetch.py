"""Tier 1: fetching an image by URL — redirects followed and re-checked, loops and private hosts refused."""

from __future__ import annotations

import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import PermanentError, PipelineError
from pipeline.http.address_policy import AddressPolicy
from pipeline.http.safe_fetch import MAX_REDIRECTS, fetch_image
from tests.conftest import ALLOW_LOCAL, LOCAL_POLICY

BODY = b"\x89PNG\r\n\x1a\n-not-really-a-png"


@pytest.fixture
def server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/hop/"):
                n = int(self.path.rsplit("/", 1)[1])
                self.send_response(302)
                self.send_header("Location", f"/hop/{n - 1}" if n > 0 else "/image.png")
                self.end_headers()
            elif self.path == "/loop":
                self.send_response(301)
                self.send_header("Location", "/loop")
                self.end_headers()
            elif self.path == "/image.png":
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY)
            else:
                self.send_response(404)
                self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_redirects_are_followed_a_few_hops(server: str) -> None:
    assert fetch_image(f"{server}/hop/2", policy=LOCAL_POLICY, max_bytes=1000) == BODY
    with pytest.raises(PermanentError, match="redirected more than"):
        fetch_image(f"{server}/hop/{MAX_REDIRECTS + 1}", policy=LOCAL_POLICY, max_bytes=1000)
    with pytest.raises(PermanentError, match="redirected more than"):
        fetch_image(f"{server}/loop", policy=LOCAL_POLICY, max_bytes=1000)


def test_private_hosts_refused_and_limits_kept(server: str) -> None:
    with pytest.raises(PermanentError, match="non-public address"):
        fetch_image(f"{server}/image.png", policy=AddressPolicy(), max_bytes=1000)
    with pytest.raises(PermanentError, match="larger than"):
        fetch_image(f"{server}/image.png", policy=LOCAL_POLICY, max_bytes=5)
    with pytest.raises(PermanentError, match="404"):
        fetch_image(f"{server}/missing.png", policy=LOCAL_POLICY, max_bytes=1000)
    with pytest.raises(PermanentError, match="http"):
        fetch_image("file:///etc/passwd", policy=LOCAL_POLICY, max_bytes=1000)


def test_https_is_fetched_from_the_checked_address_with_the_name_verified(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection goes to the address that was checked (no second DNS answer can redirect it), and
    TLS still verifies the certificate against the host name, sent as SNI."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

        def log_message(self, *args: Any) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(cert), str(key))
    httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust this test's own certificate authority
    try:
        by_name = AddressPolicy.of(["localhost", *ALLOW_LOCAL])  # the certificate's name, listed by the operator
        assert fetch_image(f"https://localhost:{port}/x.png", policy=by_name, max_bytes=1000) == BODY
        # the certificate names localhost, not 127.0.0.1: verification still happens, by name
        with pytest.raises(PipelineError):
            fetch_image(f"https://127.0.0.1:{port}/x.png", policy=by_name, max_bytes=1000)
    finally:
        httpd.shutdown()
        httpd.server_close()
