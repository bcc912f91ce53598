"""kombu's Redis transport, with a channel that can still be closed after celery collected its connection.

When a worker loses the broker, celery 5.7's consumer first `collect()`s the broken connection, which drops
the transport's reference to its kombu Connection, and then closes it. Closing the default channel gives
back the messages it holds unacked, and for that it builds a Redis client from that Connection's
parameters, which are gone: `AttributeError: 'NoneType' object has no attribute 'hostname'`. Celery treats
it as unrecoverable and the whole worker exits (seen when Redis restarted twice within seconds while a
worker held a message; celery#9250 is the same family). The channel keeps the Connection it was made for
and hands it back for that last client; the restore then either works or fails with a connection error,
which celery ignores as it should (the messages stay in Redis's unacked hash and are restored later).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

# what `broker_transport` names: celery passes it to kombu, which prefers it to the URL's scheme
TRANSPORT = f"{__name__}:Transport"


class Channel(kombu_redis.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._made_for = self.connection.client

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:  # collected before it was closed
            self.connection.client = self._made_for
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
