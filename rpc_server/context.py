"""What a method handler gets: the shared app state plus the request's own id."""
from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

import asyncpg

from .auth import Authenticator, Principal
from .config import Settings
from .schemas import ValidatorCache
from .shaping import Shaper


@dataclass
class AppState:
    settings: Settings
    pool: asyncpg.Pool
    shaper: Shaper
    validators: ValidatorCache
    auth: Authenticator


@dataclass
class RequestContext:
    """One per HTTP request (shared by the members of a batch)."""
    state: AppState
    request_id: str
    authorization: str | None = None
    _principal: Principal | None = None

    async def principal(self) -> Principal:
        """The authenticated caller; raises Unauthenticated."""
        if self._principal is None:
            self._principal = await self.state.auth.principal(self.state.pool, self.authorization)
        return self._principal

    async def role_in(self, tenant_id) -> str | None:
        """The caller's role in a tenant ("owner" for platform admins), None if none."""
        principal = await self.principal()
        if principal.is_platform_admin:
            return "owner"
        return await self.state.auth.role_in(self.state.pool, principal.user_id, tenant_id)

    @property
    def shaper(self) -> Shaper:
        return self.state.shaper

    @property
    def validators(self) -> ValidatorCache:
        return self.state.validators

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.state.pool.acquire(timeout=self.state.settings.db_connect_timeout_s) as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.connection() as conn:
            async with conn.transaction():
                yield conn
