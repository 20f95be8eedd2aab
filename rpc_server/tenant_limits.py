"""How many heavy calls (tenant SQL, graph walks) one tenant may have running at once on one
server, so that one tenant cannot take every connection of the query pool or every parsing
thread. A tenant's further calls wait for one of its own slots (other tenants are not held
up); one that waits too long answers -32005 busy."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator
from uuid import UUID

from .errors import Busy


class TenantLimiter:
    def __init__(self, per_tenant: int, wait_s: float):
        self.per_tenant, self.wait_s = per_tenant, wait_s
        self._slots: dict[UUID, asyncio.Semaphore] = {}
        self._users: dict[UUID, int] = {}

    @asynccontextmanager
    async def slot(self, tenant_id: UUID) -> AsyncIterator[None]:
        semaphore = self._slots.setdefault(tenant_id, asyncio.Semaphore(self.per_tenant))
        self._users[tenant_id] = self._users.get(tenant_id, 0) + 1
        try:
            try:
                await asyncio.wait_for(semaphore.acquire(), self.wait_s)
            except asyncio.TimeoutError:
                raise Busy(f"This tenant's {self.per_tenant} concurrent queries or graph walks "
                           "on this server are all in use; retry shortly",
                           limit=self.per_tenant) from None
            try:
                yield
            finally:
                semaphore.release()
        finally:
            self._users[tenant_id] -= 1
            if not self._users[tenant_id]:  # nobody holds or waits: forget the tenant
                del self._users[tenant_id]
                del self._slots[tenant_id]
