"""How much of a shared resource one tenant may hold at once on one server: heavy calls
(tenant SQL, graph walks, filtered queries, bulk writes), schema checks in threads, pooled
database connections, large responses in flight. A tenant's further calls wait for one of
its own slots (other tenants are not held up, and never queue behind it); one that waits
longer than `wait_s` answers -32005 busy. Calls outside any tenant (the platform's own,
tenant None) share one set."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator
from uuid import UUID

from rpc_server.errors import Busy


class TenantLimiter:
    def __init__(self, per_tenant: int, wait_s: float,
                 what: str = "concurrent queries or graph walks", setting: str | None = None):
        self.per_tenant, self.wait_s = per_tenant, wait_s
        self.what, self.setting = what, setting
        self._slots: dict[UUID | None, list] = {}  # tenant -> [semaphore, holders and waiters]

    def full(self, tenant_id: UUID | None) -> bool:
        """Whether the tenant's slots are all taken (a further acquire() would wait)."""
        entry = self._slots.get(tenant_id)
        return entry is not None and entry[0].locked()

    async def acquire(self, tenant_id: UUID | None) -> None:
        """Take one of the tenant's slots (release() gives it back, also after a Busy)."""
        entry = self._slots.get(tenant_id)
        if entry is None:
            entry = self._slots[tenant_id] = [asyncio.Semaphore(self.per_tenant), 0]
        entry[1] += 1
        semaphore = entry[0]
        if not semaphore.locked():
            await semaphore.acquire()  # free: no waiting, no timer
            return
        try:
            await asyncio.wait_for(semaphore.acquire(), self.wait_s)
        except asyncio.TimeoutError:
            self._forget(tenant_id, entry)
            named = f" ({self.setting})" if self.setting else ""
            raise Busy(f"This tenant's {self.per_tenant} {self.what} on this server{named} "
                       "are all in use; retry shortly", limit=self.per_tenant) from None
        except BaseException:
            self._forget(tenant_id, entry)
            raise

    def release(self, tenant_id: UUID | None) -> None:
        entry = self._slots[tenant_id]
        entry[0].release()
        self._forget(tenant_id, entry)

    def _forget(self, tenant_id: UUID | None, entry: list) -> None:
        entry[1] -= 1
        if not entry[1]:  # nobody holds or waits: forget the tenant
            del self._slots[tenant_id]

    @asynccontextmanager
    async def slot(self, tenant_id: UUID | None) -> AsyncIterator[None]:
        await self.acquire(tenant_id)
        try:
            yield
        finally:
            self.release(tenant_id)
