"""Queue names and which queue each stage's task goes to. Imports nothing of the app, nor the stages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

# Slow CPU work and fast I/O work on separate queues, so each can be scaled on its own length.
QUEUE_CPU = "repobuild.cpu"
QUEUE_IO = "repobuild.io"
QUEUES = (QUEUE_CPU, QUEUE_IO)
_QUEUE_OF_WORK = {"cpu": QUEUE_CPU, "io": QUEUE_IO}


class RoutedStage(Protocol):
    """What routing needs of an entry of pipeline.stages.registry.STAGES."""

    @property
    def name(self) -> str: ...

    @property
    def work(self) -> str: ...


def stage_queues(stages: Iterable[RoutedStage]) -> dict[str, str]:
    """Stage name → queue, by the kind of work its task does; the batch task's work is CPU work."""
    return {**{s.name: _QUEUE_OF_WORK[s.work] for s in stages}, "batch": QUEUE_CPU}
