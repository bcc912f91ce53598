"""Queue names and which queue each stage's task goes to. Imports nothing of the app."""

from __future__ import annotations

# Slow CPU work and fast I/O work on separate queues, so each can be scaled on its own length.
QUEUE_CPU = "repobuild.cpu"
QUEUE_IO = "repobuild.io"
QUEUES = (QUEUE_CPU, QUEUE_IO)
# The embed stages only plan, wait and assemble (io); their batches do the CPU work.
STAGE_QUEUES = {"fetch": QUEUE_IO, "parse": QUEUE_CPU, "embed_text": QUEUE_IO, "embed_images": QUEUE_IO,
                "build_db": QUEUE_CPU, "enrich": QUEUE_CPU, "publish": QUEUE_IO, "upload": QUEUE_IO,
                "source": QUEUE_IO, "existing": QUEUE_IO, "notify": QUEUE_IO, "batch": QUEUE_CPU}
