"""Every way out of `repobuild run` stops what it started.

Its redis-server and worker run in sessions of their own (a Ctrl-C in the terminal must not reach them
half-way through a task), so no signal sent to the run's terminal or process group reaches them: the run
has to stop them itself, whether it ends normally, by an exception, by SIGINT, SIGTERM or SIGHUP, or because
its terminal went away (the kernel sends SIGHUP, and every later write to the terminal fails with EIO).

`StopSignals` turns those signals into one exception, `Stopped`, so they unwind through the same `finally`
as a crash; it defers them while a child is being spawned (a child started but not yet recorded could not be
stopped) and ignores them while the cleanup runs (a second Ctrl-C must not cut it short). A SIGKILL of the run
leaves the cleanup to the kernel: see worker/parent_death.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import Any, TextIO

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """The run was told to stop by a signal. A BaseException, like KeyboardInterrupt: no `except Exception` on
    the way up may swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by this signal


class StopSignals:
    """While entered (in the main thread), SIGINT, SIGTERM and SIGHUP raise `Stopped`."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._holding = 0
        self._pending: int | None = None

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            if signal.getsignal(sig) is signal.SIG_IGN:
                continue  # ignored by whoever started us (`nohup`, a shell's background job): it stays ignored
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._holding:
            self._pending = self._pending or signum
            return
        raise Stopped(signum)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Signals arriving inside are raised when it ends: around spawning a child and recording it."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
        if not self._holding and self._pending is not None:
            signum, self._pending = self._pending, None
            raise Stopped(signum)

    def ignore(self) -> None:
        """From now on the signals are ignored: the cleanup has started and runs to its end."""
        for sig in self._previous:
            signal.signal(sig, signal.SIG_IGN)


def stop_all(steps: list[Callable[[], None]]) -> list[BaseException]:
    """Run every step even if one fails (a worker that will not stop must not keep Redis running); the errors."""
    errors: list[BaseException] = []
    for step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - collected and reported by the caller after the other steps ran
            errors.append(exc)
    return errors


def say(message: str, stream: TextIO | None = None) -> None:
    """Print to stderr (or `stream`) unless the terminal is gone (EIO, EPIPE): then point the stream at /dev/null,
    so neither this nor the interpreter's flush at exit fails on it."""
    out = stream or sys.stderr
    try:
        print(message, file=out, flush=True)
    except OSError:
        silence(out)


def silence(stream: TextIO) -> None:
    with contextlib.suppress(OSError, ValueError):
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
