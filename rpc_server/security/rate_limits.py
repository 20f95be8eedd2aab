"""Rate limits per API key and per tenant: GCRA (a token bucket held as one timestamp), in
Redis through a Lua script when configured, so every instance shares the limit; in-process
otherwise or while Redis fails. A refused call is -32005 with `retry_after` seconds."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from rpc_server.caching.redis_link import RedisDown, RedisLink
from rpc_server.errors import RATE_LIMITED, RpcError

# KEYS[1]: the bucket; ARGV: emission interval (µs per request), tolerance (µs of burst).
# Returns 0 when admitted, else the µs to wait. Server time, so instances agree.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat + interval - tolerance - now
if wait > 0 then return wait end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil((tolerance + interval) / 1000))
return 0
"""


class RateLimited(RpcError):
    code = RATE_LIMITED
    type = "rate_limited"
    default_message = "Rate limit exceeded; retry later"

    def __init__(self, scope: str, retry_after: float):
        super().__init__(f"Rate limit of this {scope} exceeded; retry in "
                         f"{retry_after:.2f} s", scope=scope, retry_after=retry_after)


@dataclass(frozen=True)
class Limit:
    per_second: float
    burst: int

    @property
    def interval_us(self) -> int:
        return max(1, int(1_000_000 / self.per_second))

    @property
    def tolerance_us(self) -> int:
        return self.interval_us * max(1, self.burst)


class LocalBuckets:
    """The same GCRA in this process (bounded: the oldest buckets are dropped)."""

    def __init__(self, size: int = 100_000):
        self.size = size
        self._tat: dict[str, float] = {}

    def wait_us(self, key: str, limit: Limit) -> int:
        now = time.monotonic() * 1_000_000
        tat = max(self._tat.get(key, now), now)
        wait = tat + limit.interval_us - limit.tolerance_us - now
        if wait > 0:
            return int(wait)
        self._tat[key] = tat + limit.interval_us
        if len(self._tat) > self.size:
            self._tat.pop(next(iter(self._tat)))
        return 0


class RateLimiter:
    def __init__(self, per_key: Limit | None, per_tenant: Limit | None,
                 link: RedisLink | None = None):
        self.limits = {"key": per_key, "tenant": per_tenant}
        self.link = link
        self.local = LocalBuckets()
        self._script = link.client.register_script(GCRA_LUA) if link else None

    @property
    def enabled(self) -> bool:
        return any(self.limits.values())

    async def admit_call(self, principal, tenant_id) -> None:
        """Count one call against the caller's key and, for tenant methods, the tenant."""
        caller = principal.key_id or (principal.run.key_id if principal.run else None) \
            or principal.user_id or "anonymous"
        await self.admit("key", str(caller))
        if tenant_id is not None:
            await self.admit("tenant", str(tenant_id))

    @classmethod
    def from_settings(cls, settings, link: RedisLink | None) -> "RateLimiter":
        per_key = Limit(settings.rate_limit_key_per_s, settings.rate_limit_key_burst) \
            if settings.rate_limit_key_per_s > 0 else None
        per_tenant = Limit(settings.rate_limit_tenant_per_s, settings.rate_limit_tenant_burst) \
            if settings.rate_limit_tenant_per_s > 0 else None
        return cls(per_key, per_tenant, link)

    async def admit(self, scope: str, ident: str) -> None:
        """Raise RateLimited when `ident` (a key id, a tenant id) is over its limit."""
        limit = self.limits[scope]
        if limit is None:
            return
        bucket = f"flexdb:rl:{scope}:{ident}"
        wait = None
        script = self._script  # set exactly when link is
        if self.link is not None and script is not None:
            try:
                wait = int(await self.link.run(lambda _: script(
                    keys=[bucket], args=[limit.interval_us, limit.tolerance_us])))
            except RedisDown:
                wait = None
        if wait is None:
            wait = self.local.wait_us(bucket, limit)
        if wait > 0:
            raise RateLimited(scope, math.ceil(wait / 1000) / 1000)
