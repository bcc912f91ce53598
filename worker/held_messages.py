"""A new job's first message, made by Celery and kombu exactly as `apply_async` sends it, but held back: handed over
as the Redis commands that send it, so that the job store runs them in the same step as it stores the job.

One round trip for a submission instead of six, and never a stored job without its message or a message without
its job. Celery builds everything as for any send (headers, the chain of later stages, routing, time limits, the
task-sent event); only the last step differs: kombu's Redis channel turns each prepared message into commands and,
given a publish batch, hands them to it instead of running them (the protocol of kombu's own `Producer.batch()`,
kombu ≥ 5.7). This producer is that batch.
"""

from __future__ import annotations

from typing import Any

from kombu.messaging import Producer

from pipeline.stores.jobs import RedisCommand
from worker.chains import send_chain
from worker.repobuild_app import RepobuildCelery


class HeldProducer(Producer):
    """A producer whose messages end up in `commands` (name, args) instead of in Redis."""

    def __init__(self, channel: Any) -> None:
        super().__init__(channel, auto_declare=False)
        self.commands: list[RedisCommand] = []

    def _publish(self, body: Any, priority: Any, content_type: Any, content_encoding: Any, headers: Any,
                 properties: Any, routing_key: Any, mandatory: Any, immediate: Any, exchange: Any, declare: Any,
                 timeout: Any = None, confirm_timeout: Any = None, retry: bool = False,
                 retry_policy: Any = None) -> None:
        # kombu's Producer._publish, with this producer as the channel's publish batch
        channel = self.channel
        message = channel.prepare_message(body, priority, content_type, content_encoding, headers, properties)
        for entity in declare or ():
            # the queue's binding, the event exchange's type: declared once per connection, as kombu does
            self.maybe_declare(entity, retry=retry, **(retry_policy or {}))
        channel.basic_publish(message, exchange=exchange, routing_key=routing_key, _publish_batch=self)

    def add(self, name: str, *args: Any) -> None:
        """What kombu's Redis channel calls with each command of a message it publishes in a batch."""
        self.commands.append((name, args))


def held_chain(app: RepobuildCelery, job_id: str, stages: list[str]) -> list[RedisCommand]:
    """The commands that send the chain of `stages` for `job_id` (the first stage's message carries the rest)."""
    with app.producer_or_acquire() as pooled:
        if not hasattr(pooled.channel, "create_publish_batch"):
            # a kombu (< 5.7) or a transport without publish batches would push the message itself: sent, not held
            raise RuntimeError(f"job {job_id}: the broker's channel cannot hold a message back")
        producer = HeldProducer(pooled.channel)
        send_chain(app, job_id, stages, producer)
    if not any(name == "lpush" for name, _args in producer.commands):
        raise RuntimeError(f"job {job_id}: kombu handed over no message for {stages[0]}")
    return producer.commands
