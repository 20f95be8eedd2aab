"""What a method handler gets: the shared app state plus the request's own id."""
from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

import asyncpg

from .config import Settings
from .schemas import ValidatorCache
from .shaping import Shaper


@dataclass
class AppState:
    settings: Settings
    pool: asyncpg.Pool
    shaper: Shaper
    validators: ValidatorCache


@dataclass
class RequestContext:
    state: AppState
    request_id: str

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
