"""Cache invalidation between instances: a revoked key or a changed membership is dropped
from this instance's caches at once and, through Redis pub/sub, from every other instance's
within milliseconds (without Redis, or while it fails, other instances wait out
FLEXDB_AUTH_CACHE_TTL_S)."""
from __future__ import annotations

import asyncio
import logging
import uuid
from uuid import UUID

import orjson

from .auth import Authenticator
from .redis_link import RedisDown, RedisLink, keep_listening

log = logging.getLogger(__name__)
CHANNEL = "flexdb:invalidate"


class Invalidation:
    def __init__(self, link: RedisLink, auth: Authenticator):
        self.link, self.auth = link, auth
        self.instance = uuid.uuid4().hex  # our own messages are skipped
        self.received = 0
        self._pending: set[asyncio.Task] = set()
        self._listener: asyncio.Task | None = None

    def announce(self, kind: str, *ids: UUID) -> None:
        message = orjson.dumps({"from": self.instance, "kind": kind,
                                "ids": [str(i) for i in ids]})
        task = asyncio.get_running_loop().create_task(self._publish(message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, message: bytes) -> None:
        # First make the shared entries stale, then tell the instances to drop their own:
        # an instance that re-reads after the message must not find the old entry.
        if self.auth.shared is not None:
            await self.auth.shared.invalidate()
        try:
            await self.link.run(lambda client: client.publish(CHANNEL, message))
        except RedisDown:
            pass  # other instances fall back to their cache TTL

    def receive(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
            if message["from"] == self.instance:
                return
            self.auth.apply(message["kind"], *(UUID(i) for i in message["ids"]))
            self.received += 1
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("ignored a malformed invalidation message")

    def start(self) -> None:
        self.auth.announce = self.announce
        self._listener = asyncio.get_running_loop().create_task(
            keep_listening(self.link, CHANNEL, self.receive))

    async def stop(self) -> None:
        self.auth.announce = None
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        await asyncio.gather(*self._pending, return_exceptions=True)
