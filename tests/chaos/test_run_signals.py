"""`repobuild run` stopped mid-job, every way it can be: nothing it started may keep running.

Each case starts `python -m api.cli.main run <corpus>` as a real process (under a real pty where a terminal is
the point), waits until a stage of its job is running on its private worker, injects the fault at a seeded
moment, and checks by pid and start time in /proc that the run's redis-server, its Celery main process and
every pool process are gone within seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.models import StageStatus
from pipeline.stores.jobs_redis import RedisJobStore
from tests.chaos.conftest import Chaos
from tests.chaos.proc_tree import Proc, descendants, running, wait_gone
from tests.conftest import CORPORA, ROOT

JOB = "sig"
GONE_WITHIN_S = 15.0  # generous for a loaded machine; the measured times go in the record


def _take_terminal() -> None:
    """In the child, after setsid: the pty on fd 0 becomes its controlling terminal, as in a login shell."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@dataclass
class Run:
    proc: subprocess.Popen[bytes]
    master: int | None  # the pty's master side, if it runs under one

    def drain(self) -> None:
        """Read what it drew on its terminal, so its writes never block on a full pty."""
        while self.master is not None and select.select([self.master], [], [], 0)[0]:
            try:
                if not os.read(self.master, 65536):
                    return
            except OSError:  # EIO: the slave side is closed, the run is gone
                return

    def close_terminal(self) -> None:
        assert self.master is not None
        os.close(self.master)
        self.master = None


def start_run(tmp_path: Path, corpus: Path, tty: bool) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPOBUILD_")}  # its own Redis, not ours
    env.update(PYTHONPATH=str(ROOT), TERM="xterm", COLUMNS="100")
    cmd = [sys.executable, "-m", "api.cli.main", "run", str(corpus), "--out", str(tmp_path / "out"),
           "--job-id", JOB, "--concurrency", "2"]
    if not tty:
        log = open(tmp_path / "run.log", "wb")  # noqa: SIM115 - closed below, the child keeps its copy
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return Run(proc, None)
    master, slave = os.openpty()
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True, preexec_fn=_take_terminal)
    os.close(slave)
    return Run(proc, master)


def redis_of(procs: list[Proc]) -> tuple[Proc, int] | None:
    """The run's redis-server and its port: it retitles itself `redis-server 127.0.0.1:PORT`."""
    for p in procs:
        words = p.command.split()
        if words and words[0].endswith("redis-server"):
            if "--port" in words:
                return p, int(words[words.index("--port") + 1])
            return p, int(words[1].rsplit(":", 1)[1])
    return None


def pool_started(procs: list[Proc]) -> bool:
    mains = {p.pid for p in procs if "celery" in p.command and "worker" in p.argv}
    return any(p.ppid in mains for p in procs)


def wait_mid_job(run: Run, timeout: float = 90) -> list[Proc]:
    """The run's process tree once a stage of its job is running on a started pool."""
    deadline = time.monotonic() + timeout
    store: RedisJobStore | None = None
    while time.monotonic() < deadline:
        run.drain()
        assert run.proc.poll() is None, f"run exited early with {run.proc.returncode}"
        tree = descendants(run.proc.pid)
        server = redis_of(tree)
        if server is not None and store is None:
            store = RedisJobStore.from_url(f"redis://127.0.0.1:{server[1]}/0")
        if store is not None and pool_started(tree) and store.exists(JOB):
            if any(s.status == StageStatus.RUNNING for s in store.get(JOB).stages):
                store.r.close()
                return tree
        time.sleep(0.1)
    raise AssertionError(f"no stage of {JOB} running within {timeout}s: {descendants(run.proc.pid)}")


def _signal(sig: signal.Signals) -> Callable[[Run, list[Proc]], None]:
    return lambda run, _tree: run.proc.send_signal(sig)


def _kill_its_redis(run: Run, tree: list[Proc]) -> None:
    """A crash of the run: the Redis it watches the job on disappears, so its next read raises."""
    server = redis_of(tree)
    assert server is not None
    os.kill(server[0].pid, signal.SIGKILL)


def _ctrl_c(run: Run, _tree: list[Proc]) -> None:
    assert run.master is not None
    os.write(run.master, b"\x03")  # the terminal's line discipline sends SIGINT to the foreground group


# kind, under a pty, the fault, the run's exit status, in CI
CASES = [
    ("run: SIGTERM", False, _signal(signal.SIGTERM), 128 + signal.SIGTERM, True),
    ("run: terminal closed", True, lambda run, _tree: run.close_terminal(), 128 + signal.SIGHUP, True),
    ("run: SIGKILL", False, _signal(signal.SIGKILL), -signal.SIGKILL, True),
    ("run: crash (its Redis killed)", False, _kill_its_redis, 1, True),
    ("run: SIGHUP", False, _signal(signal.SIGHUP), 128 + signal.SIGHUP, False),
    ("run: SIGINT", False, _signal(signal.SIGINT), 128 + signal.SIGINT, False),
    ("run: Ctrl-C in its terminal", True, _ctrl_c, 128 + signal.SIGINT, False),
]


@pytest.mark.parametrize(("kind", "tty", "fault", "status", "in_ci"), CASES, ids=[c[0][5:] for c in CASES])
def test_run_stopped_mid_job_leaves_nothing_running(
        chaos: Chaos, tmp_path: Path, kind: str, tty: bool, fault: Callable[[Run, list[Proc]], None],
        status: int, in_ci: bool) -> None:
    if not (in_ci or chaos.full):
        pytest.skip("full scale only (CHAOS_SCALE=full): the CI cases cover each path of the cleanup")
    rec = chaos.record(kind)
    run = start_run(tmp_path, CORPORA / "til", tty)
    tree: list[Proc] = []
    try:
        wait_mid_job(run)
        time.sleep(chaos.rng.uniform(0.0, 1.5))  # a seeded moment inside the stage
        run.drain()
        tree = descendants(run.proc.pid)
        assert redis_of(tree) is not None and pool_started(tree), tree
        fault(run, tree)
        rec.injected += 1
        elapsed, left = wait_gone(tree, GONE_WITHIN_S)
        assert left == [], f"still running {GONE_WITHIN_S}s after '{kind}': {left}"
        code = run.proc.wait(GONE_WITHIN_S)
        assert code == status, f"exit status {code}, expected {status}; see {tmp_path / 'run.log'}"
        rec.resume_s.append(round(elapsed, 2))
        names = sorted({p.command.split()[0].rsplit("/", 1)[-1] for p in tree})
        rec.notes.append(f"{kind}: {len(tree)} processes ({', '.join(names)}) gone {elapsed:.2f}s after the fault")
    finally:
        for p in descendants(run.proc.pid) + tree:
            if running(p):  # the same process still: never a pid the system gave to someone else since
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
        if run.master is not None:
            os.close(run.master)
