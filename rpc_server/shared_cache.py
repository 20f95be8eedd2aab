"""Lookups cached in Redis for every instance, behind each instance's own short cache: the
auth lookups (API key -> caller, user and tenant -> role) and the node types writes validate
against. Each namespace has one generation counter that any invalidation bumps, and an entry
written under an older generation is a miss: a lookup that raced a revocation can never be
served after it. Redis failing means a miss (the database answers)."""
from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from .redis_link import RedisDown, RedisLink

MISSING = object()


class SharedCache:
    def __init__(self, link: RedisLink, ttl_s: float, namespace: str):
        self.link = link
        self.prefix = f"flexdb:{namespace}:"
        self.generation_key = f"flexdb:{namespace}:generation"
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.hits = self.misses = 0  # read by /metrics

    async def get(self, kind: str, ident: str) -> tuple[Any, int | None]:
        """(the cached value or MISSING, the generation to write a fresh value under)."""
        key = f"{self.prefix}{kind}:{ident}"
        try:
            generation, raw = await self.link.run(lambda c: c.mget(self.generation_key, key))
        except RedisDown:
            return MISSING, None
        generation = int(generation or 0)
        if raw is not None:
            entry = orjson.loads(raw)
            if entry["g"] == generation:
                self.hits += 1
                return entry["v"], generation
        self.misses += 1
        return MISSING, generation

    async def put(self, kind: str, ident: str, value: Any, generation: int | None) -> None:
        if generation is None:  # Redis was failing: nothing to share
            return
        payload = orjson.dumps({"g": generation, "v": value})
        try:
            await self.link.run(lambda c: c.set(f"{self.prefix}{kind}:{ident}", payload,
                                                px=self.ttl_ms))
        except RedisDown:
            pass

    async def invalidate(self) -> None:
        """After a change (a revocation, a new schema): every entry of the namespace becomes
        a miss."""
        try:
            await self.link.run(lambda c: c.incr(self.generation_key))
        except RedisDown:
            pass  # entries then live out their TTL


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
