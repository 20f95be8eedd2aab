"""Lookups cached in Redis for every instance, behind each instance's own short cache: the
auth lookups (API key -> caller, user and tenant -> role) and the node types writes validate
against. Each namespace has one generation counter that any invalidation bumps, and an entry
written under an older generation is a miss: a lookup that raced a revocation can never be
served after it. Redis failing means a miss (the database answers).

Fail closed: from the moment a change is made here until its generation bump is written,
this instance does not trust the namespace (every lookup is a miss and nothing is written
back), so a Redis that answers reads but refuses writes (read-only replica, out of memory,
paused clients) cannot serve a revoked key here. Other instances then cannot learn of the
change through Redis; what bounds them is the entries' TTL: each is written with it and an
instance keeps a copy no longer than the entry has left, so nothing outlives `ttl_s` after
the database read that made it."""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import orjson

from rpc_server.caching.redis_link import RedisDown, RedisLink

MISSING = object()


class Lookup(NamedTuple):
    value: Any  # MISSING on a miss
    generation: int | None  # to write a fresh value under; None: write nothing
    expires_in: float | None = None  # a hit: seconds the entry has left in Redis


UNTRUSTED = Lookup(MISSING, None)


class SharedCache:
    def __init__(self, link: RedisLink, ttl_s: float, namespace: str):
        self.link = link
        self.prefix = f"flexdb:{namespace}:"
        self.generation_key = f"flexdb:{namespace}:generation"
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.hits = self.misses = 0  # read by /metrics
        self._changes = self._invalidated = 0  # changes made, changes whose bump is written
        self._retry: asyncio.Task | None = None

    @property
    def trusted(self) -> bool:
        return self._invalidated >= self._changes

    async def get(self, kind: str, ident: str) -> Lookup:
        """The cached value (or MISSING) and the generation to write a fresh value under."""
        if not self.trusted:
            self._retry_invalidation()
            return UNTRUSTED
        key = f"{self.prefix}{kind}:{ident}"

        async def read(client):
            async with client.pipeline(transaction=False) as pipe:
                return await pipe.mget(self.generation_key, key).pttl(key).execute()
        try:
            (generation, raw), left_ms = await self.link.run(read)
        except RedisDown:
            return UNTRUSTED
        generation = int(generation or 0)
        if raw is not None and left_ms > 0:
            entry = orjson.loads(raw)
            if entry["g"] == generation:
                self.hits += 1
                return Lookup(entry["v"], generation, left_ms / 1000)
        self.misses += 1
        return Lookup(MISSING, generation)

    async def put(self, kind: str, ident: str, value: Any, generation: int | None) -> None:
        if generation is None or not self.trusted:  # Redis failing, or a change not yet out
            return
        payload = orjson.dumps({"g": generation, "v": value})
        try:
            await self.link.run(lambda c: c.set(f"{self.prefix}{kind}:{ident}", payload,
                                                px=self.ttl_ms))
        except RedisDown:
            pass

    def changed(self) -> None:
        """A change (a revocation, a new schema) has committed: stop trusting the namespace
        at once, until `invalidate` has written a generation bump made after it."""
        self._changes += 1

    async def invalidate(self) -> bool:
        """Make every entry of the namespace a miss (after `changed`). False when the bump
        could not be written: the namespace stays untrusted here, and lookups retry it."""
        wanted = self._changes
        try:
            await self.link.run(lambda c: c.incr(self.generation_key))
        except RedisDown:
            return False
        self._invalidated = max(self._invalidated, wanted)
        return True

    async def stop(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            await asyncio.gather(self._retry, return_exceptions=True)

    def _retry_invalidation(self) -> None:
        """One bump attempt at a time, off the caller's path (a paused Redis makes it wait)."""
        if self._retry is None or self._retry.done():
            self._retry = asyncio.get_running_loop().create_task(self.invalidate())


def principal_to_json(principal) -> dict | None:
    if principal is None:
        return None
    return {"user_id": str(principal.user_id) if principal.user_id else None,
            "admin": principal.is_platform_admin,
            "key_id": str(principal.key_id) if principal.key_id else None,
            "expires_at": principal.expires_at.isoformat() if principal.expires_at else None}


def principal_from_json(value: dict | None, principal_cls):
    if value is None:
        return None
    return principal_cls(
        UUID(value["user_id"]) if value["user_id"] else None, value["admin"],
        UUID(value["key_id"]) if value["key_id"] else None,
        datetime.fromisoformat(value["expires_at"]) if value["expires_at"] else None)
