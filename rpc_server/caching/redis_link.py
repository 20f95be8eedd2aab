"""The optional Redis connection, with its health: a failing Redis is skipped (callers fall
back to in-process state) and retried after a pause, so requests never wait on it."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

if TYPE_CHECKING:
    import redis.asyncio as redis

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_AFTER_S = 1.0  # after a failure, Redis is not tried again for this long
TIMEOUT_S = 0.5


class RedisDown(Exception):
    """Redis is not usable right now; use the in-process fallback."""


class RedisLink:
    def __init__(self, url: str):
        # Imported here, not with this module: the redis package takes a fifth of a server
        # process's start, and most servers run without Redis.
        import redis.asyncio as redis
        from redis.exceptions import RedisError
        self.errors: tuple[type[BaseException], ...] = (RedisError, OSError,
                                                        asyncio.TimeoutError)
        self.client = redis.Redis.from_url(url, socket_timeout=TIMEOUT_S,
                                           socket_connect_timeout=TIMEOUT_S,
                                           health_check_interval=0)
        self.url = url
        self.failures = 0  # read by /metrics
        self.last_error: str | None = None
        self._down_until = 0.0

    @property
    def healthy(self) -> bool:
        return self.last_error is None

    async def run(self, operation: Callable[[redis.Redis], Awaitable[T]]) -> T:
        """Run one operation, or raise RedisDown at once while Redis is known to be failing."""
        if self.last_error is not None and time.monotonic() < self._down_until:
            raise RedisDown(self.last_error)
        try:
            result = await asyncio.wait_for(operation(self.client), TIMEOUT_S * 2)
        except self.errors as exc:
            self._failed(exc)
            raise RedisDown(self.last_error) from None
        if self.last_error is not None:
            log.warning("Redis is back; shared caches and limits resume")
            self.last_error = None
        return result

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.last_error is None:
            log.warning("Redis failed (%s): using in-process caches and limits until it is "
                        "back", type(exc).__name__)
        self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
        self._down_until = time.monotonic() + RETRY_AFTER_S

    async def ping(self) -> bool:
        return bool(await self.run(lambda c: c.ping()))

    async def close(self) -> None:
        await self.client.aclose()


async def keep_listening(link: RedisLink, channel: str,
                         handle: Callable[[Any], None]) -> None:
    """Deliver every message of a channel to `handle`, reconnecting after failures."""
    while True:
        pubsub = link.client.pubsub()
        try:
            await pubsub.subscribe(channel)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    handle(message["data"])
        except asyncio.CancelledError:
            raise
        except link.errors as exc:
            link._failed(exc)
            await asyncio.sleep(RETRY_AFTER_S)
        finally:
            try:
                await pubsub.aclose()
            except link.errors:
                pass
