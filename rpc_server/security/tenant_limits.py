"""How much of a shared resource one tenant may hold at once on one server: heavy calls
(tenant SQL, graph walks, filtered queries, bulk writes), schema checks in threads, pooled
database connections, large responses in flight. A tenant's further calls wait for one of
its own slots (other tenants are not held up, and never queue behind it); one that waits
longer than `wait_s` answers -32005 busy. Calls outside any tenant (the platform's own,
tenant None) share one set.

Every tenant-scoped call passes through here (the pool share), so both paths are kept cheap:
a free slot is taken without an await; a call that waits parks on a plain future
(asyncio.wait_for would wrap the wait in a Task of its own, on Python 3.11 the costliest
part of a call that has to queue), and release() hands its slot straight to the longest
waiter, so a newcomer cannot take it first. Every wait lasts the same `wait_s`, so the
waiters' deadlines come in arrival order: one timer per tenant, armed for the longest
waiter's deadline, ends the waits (a timer per wait cost as much as the rest of a wait)."""
from __future__ import annotations

import asyncio
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator
from uuid import UUID

from rpc_server.errors import Busy


class _Slots:
    """One tenant's account: slots not held, callers holding or waiting (the entry is
    dropped when none are left), the waiters in arrival order with their deadlines, and
    the timer armed for the first deadline (None while nobody waits)."""
    __slots__ = ("free", "users", "waiters", "timer")

    def __init__(self, free: int):
        self.free, self.users = free, 0
        self.waiters: deque[tuple[asyncio.Future, float]] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake at the first waiter's deadline (unless a timer is armed already)."""
        if self.timer is None and self.waiters:
            self.timer = loop.call_at(self.waiters[0][1], self.expire, loop)

    def expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """End the waits whose deadline has passed (no slot for them), then re-arm."""
        self.timer = None
        now = loop.time()
        waiters = self.waiters
        while waiters and (waiters[0][0].done() or waiters[0][1] <= now):
            waiter = waiters.popleft()[0]
            if not waiter.done():
                waiter.set_result(False)
        self.arm(loop)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class TenantLimiter:
    def __init__(self, per_tenant: int, wait_s: float,
                 what: str = "concurrent queries or graph walks", setting: str | None = None,
                 busy: str | None = None):
        self.per_tenant, self.wait_s = per_tenant, wait_s
        self.what, self.setting = what, setting
        self.busy = busy  # the Busy message, when not the tenant's (a limit of the server)
        self._slots: dict[UUID | None, _Slots] = {}

    def full(self, tenant_id: UUID | None) -> bool:
        """Whether the tenant's slots are all taken (a further acquire() would wait)."""
        entry = self._slots.get(tenant_id)
        return entry is not None and not entry.free

    def take(self, tenant_id: UUID | None) -> bool:
        """Take one of the tenant's slots if one is free now (then release() gives it
        back): acquire() without a coroutine, for the callers that pass here on every
        call. (False leaves the account in place for the acquire() that follows.)"""
        entry = self._slots.get(tenant_id)
        if entry is None:
            entry = self._slots[tenant_id] = _Slots(self.per_tenant)
        if not entry.free:
            return False
        entry.users += 1
        entry.free -= 1
        return True

    async def acquire(self, tenant_id: UUID | None) -> None:
        """Take one of the tenant's slots (release() gives it back, also after a Busy)."""
        entry = self._slots.get(tenant_id)
        if entry is None:
            entry = self._slots[tenant_id] = _Slots(self.per_tenant)
        entry.users += 1
        if entry.free:  # free: no waiting, no timer
            entry.free -= 1
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()  # True: release() handed us its slot
        entry.waiters.append((waiter, loop.time() + self.wait_s))
        entry.arm(loop)
        try:
            granted = await waiter
        except BaseException:  # cancelled; a slot handed over just before is passed on
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._hand_on(entry)
            self._give_up(tenant_id, entry, waiter)
            raise
        if not granted:
            self._give_up(tenant_id, entry, waiter)
            named = f" ({self.setting})" if self.setting else ""
            raise Busy(self.busy or f"This tenant's {self.per_tenant} {self.what} on this "
                       f"server{named} are all in use; retry shortly", limit=self.per_tenant)

    def release(self, tenant_id: UUID | None) -> None:
        entry = self._slots[tenant_id]
        if entry.waiters:
            self._hand_on(entry)
        else:  # (the common case, written out)
            entry.free += 1
        entry.users -= 1
        if not entry.users:  # (_forget, written out)
            entry.disarm()
            del self._slots[tenant_id]

    @staticmethod
    def _hand_on(entry: _Slots) -> None:
        """A slot is given back: to the longest waiter still waiting, else to the free."""
        while entry.waiters:
            waiter = entry.waiters.popleft()[0]
            if not waiter.done():
                waiter.set_result(True)
                return
        entry.free += 1

    def _give_up(self, tenant_id: UUID | None, entry: _Slots, waiter: asyncio.Future) -> None:
        # (rare: a cancellation; a timed-out waiter was taken off by expire())
        for index, (queued, _) in enumerate(entry.waiters):
            if queued is waiter:
                del entry.waiters[index]
                break
        self._forget(tenant_id, entry)

    def _forget(self, tenant_id: UUID | None, entry: _Slots) -> None:
        entry.users -= 1
        if not entry.users:  # nobody holds or waits: forget the tenant
            entry.disarm()
            del self._slots[tenant_id]

    @asynccontextmanager
    async def slot(self, tenant_id: UUID | None) -> AsyncIterator[None]:
        await self.acquire(tenant_id)
        try:
            yield
        finally:
            self.release(tenant_id)
