"""Cache invalidation between instances: a revoked key, a changed membership or a changed
node type is dropped from this instance's caches at once and, through Redis pub/sub, from
every other instance's within milliseconds (without Redis, or while it fails, other
instances wait out FLEXDB_AUTH_CACHE_TTL_S; node types are checked on every write anyway).
The shared entries of the change's kind are untrusted here from the moment of the change
until their generation bump is written (caching/shared_cache.py).

Each cache taking part has `kinds` (the messages it acts on), `apply(kind, *ids)`, a
`shared` Redis cache or None, and an `announce` slot this module fills."""
from __future__ import annotations

import asyncio
import logging
import uuid
from uuid import UUID

import orjson

from rpc_server.caching.redis_link import RedisDown, RedisLink, keep_listening

log = logging.getLogger(__name__)
CHANNEL = "flexdb:invalidate"


class Invalidation:
    def __init__(self, link: RedisLink, *caches):
        self.link, self.caches = link, caches
        self.instance = uuid.uuid4().hex  # our own messages are skipped
        self.received = 0
        self._pending: set[asyncio.Task] = set()
        self._listener: asyncio.Task | None = None

    def announce(self, kind: str, *ids: UUID) -> None:
        for cache in self._shared_of(kind):
            cache.changed()  # untrusted here from now until the bump is written
        task = asyncio.get_running_loop().create_task(self._publish(kind, ids))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _shared_of(self, kind: str) -> list:
        return [cache.shared for cache in self.caches
                if kind in cache.kinds and cache.shared is not None]

    async def _publish(self, kind: str, ids: tuple[UUID, ...]) -> None:
        # First make the shared entries stale, then tell the instances to drop their own:
        # an instance that re-reads after the message must not find the old entry. If the
        # bump could not be written, the message says so: the others stop trusting the
        # shared entries too, until they write a bump themselves.
        bumped = [await shared.invalidate() for shared in self._shared_of(kind)]
        message = orjson.dumps({"from": self.instance, "kind": kind,
                                "ids": [str(i) for i in ids], "stale": not all(bumped)})
        try:
            await self.link.run(lambda client: client.publish(CHANNEL, message))
        except RedisDown:
            pass  # other instances fall back to their cache TTL

    def receive(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
            if message["from"] == self.instance:
                return
            kind, ids = message["kind"], [UUID(i) for i in message["ids"]]
            if message.get("stale"):
                for shared in self._shared_of(kind):
                    shared.changed()
            for cache in self.caches:
                if kind in cache.kinds:
                    cache.apply(kind, *ids)
            self.received += 1
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
            log.warning("ignored a malformed invalidation message")

    def start(self) -> None:
        for cache in self.caches:
            cache.announce = self.announce
        self._listener = asyncio.get_running_loop().create_task(
            keep_listening(self.link, CHANNEL, self.receive))

    async def stop(self) -> None:
        for cache in self.caches:
            cache.announce = None
            if cache.shared is not None:
                await cache.shared.stop()
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        await asyncio.gather(*self._pending, return_exceptions=True)
