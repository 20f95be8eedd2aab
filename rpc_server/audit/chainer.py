"""Puts recorded audit events on their tenant's hash chain, right after the change commits.

A committed call kicks its tenant; one task per server chains kicked tenants in batches
(while it chains one batch, the next accumulates), and every second it also sweeps the
database for events any server left pending (one that stopped or lost its connection).
Readers of the trail call `flush` first, so they see every committed event on the chain.
Chaining failing (the database is away) only delays it: the events wait in audit_pending."""
from __future__ import annotations

import asyncio
import logging
from uuid import UUID

import asyncpg

from rpc_server.storage.db import Connection
from rpc_server.storage.repositories.audit import CHAIN_BATCH, AuditRepository

log = logging.getLogger(__name__)
SWEEP_S = 1.0
GATHER_S = 0.02  # after a kick, let more events arrive: fewer, larger chaining transactions


class AuditChainer:
    def __init__(self, pool: asyncpg.Pool, acquire_timeout_s: float):
        self.pool, self.acquire_timeout_s = pool, acquire_timeout_s
        self.chained = 0  # read by /metrics
        self._dirty: set[UUID] = set()
        self._working: set[UUID] = set()  # being chained by the task right now
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def kick(self, tenant_id: UUID) -> None:
        """A transaction that recorded an event for `tenant_id` has committed."""
        self._dirty.add(tenant_id)
        self._wake.set()

    async def flush(self, tenant_id: UUID) -> None:
        """Chain the tenant's pending events now (before reading its trail)."""
        async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn:
            await self._chain_all(conn, tenant_id)

    async def _chain_all(self, conn: Connection, tenant_id: UUID) -> None:
        if not await AuditRepository(conn).has_pending(tenant_id):
            return  # chained already (by a reader, or by another server): no head lock
        while True:
            async with conn.transaction():
                moved = await AuditRepository(conn).chain_pending(tenant_id)
            self.chained += moved
            if moved < CHAIN_BATCH:
                return

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + SWEEP_S
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_sweep - loop.time()))
            except asyncio.TimeoutError:
                pass
            else:
                await asyncio.sleep(GATHER_S)
            self._wake.clear()
            self._working, self._dirty = self._dirty, set()
            failed = False
            try:
                async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn:
                    if loop.time() >= next_sweep:
                        next_sweep = loop.time() + SWEEP_S
                        self._working |= set(await AuditRepository(conn).pending_tenants())
                    for tenant in list(self._working):
                        try:  # one tenant failing does not hold up the others
                            await self._chain_all(conn, tenant)
                            self._working.discard(tenant)
                        except (asyncpg.PostgresError, ValueError) as exc:
                            failed = True
                            log.warning("could not chain audit events of %s (will retry): %r",
                                        tenant, exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried: the events stay pending
                failed = True
                log.warning("could not chain audit events (will retry): %r", exc)
            self._dirty |= self._working
            self._working = set()
            if failed:
                await asyncio.sleep(SWEEP_S)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the task, then chain what the last calls recorded (best effort: a server
        that cannot leaves them to the others' sweep or to its next start)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for tenant in list(self._dirty | self._working):
            try:
                await self.flush(tenant)
            except Exception as exc:  # noqa: BLE001
                log.warning("audit events of %s left pending at stop: %r", tenant, exc)
