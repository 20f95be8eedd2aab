"""Numbers each tenant's committed change events right after the change commits, and drops
events past retention.

A committed call kicks its tenant; one task per server numbers the kicked tenants' events
(while it numbers one round, the next accumulates), and every second it also sweeps the
database for events any server left unnumbered (one that stopped, or a change whose tenant it
did not know, such as a user deleted with memberships in several tenants). Several servers may
number the same tenant: its change_heads row lock makes them take turns, and each sees what the
previous one numbered. Failing (the database is away) only delays numbering: the events wait,
recorded, without a position."""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from uuid import UUID

import asyncpg

from rpc_server.storage.db import Connection
from rpc_server.storage.repositories.changes import ChangeRepository

log = logging.getLogger(__name__)
SWEEP_S = 1.0
# After a kick, let more changes commit first: each numbering is a transaction of its own
# (a WAL flush), and under load numbering every commit at once doubled the flushes writers
# wait for. What it adds to a change's way to its readers is this, at most.
GATHER_S = 0.01
BATCH = 5000  # events numbered in one transaction
TRIM_BATCH = 10_000  # events dropped in one transaction


class FeedSequencer:
    def __init__(self, pool: asyncpg.Pool, acquire_timeout_s: float, *, keep_events: int,
                 keep_days: float, trim_every_s: float):
        self.pool, self.acquire_timeout_s = pool, acquire_timeout_s
        self.keep_events, self.keep_days, self.trim_every_s = keep_events, keep_days, trim_every_s
        self.numbered = 0  # read by /metrics
        self._dirty: set[UUID] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def kick(self, tenant_id: UUID) -> None:
        """A transaction that may have changed `tenant_id`'s objects has committed."""
        self._dirty.add(tenant_id)
        self._wake.set()

    async def flush(self, tenant_id: UUID) -> None:
        """Number the tenant's committed events now (before reading its feed)."""
        async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn:
            if await ChangeRepository(conn).has_pending(tenant_id):
                await self._number_all(conn, tenant_id)

    async def _number_all(self, conn: Connection, tenant_id: UUID) -> None:
        while True:
            numbered = await ChangeRepository(conn).sequence(tenant_id, BATCH)
            self.numbered += numbered
            if numbered < BATCH:
                return

    async def trim(self, conn: Connection) -> int:
        """One retention pass over every tenant: how many events it dropped."""
        repo = ChangeRepository(conn)
        before = datetime.now(timezone.utc) - timedelta(days=self.keep_days)
        dropped = 0
        for tenant in await repo.tenants():
            while (n := await repo.trim(tenant, self.keep_events, before, TRIM_BATCH)):
                dropped += n
        return dropped

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + SWEEP_S
        next_trim = loop.time() + self.trim_every_s
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_sweep - loop.time()))
            except asyncio.TimeoutError:
                pass
            else:
                await asyncio.sleep(GATHER_S)
            self._wake.clear()
            working, self._dirty = self._dirty, set()
            failed = False
            try:
                async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn:
                    if loop.time() >= next_sweep:
                        next_sweep = loop.time() + SWEEP_S
                        working |= set(await ChangeRepository(conn).pending_tenants())
                    for tenant in list(working):
                        try:  # one tenant failing does not hold up the others
                            await self._number_all(conn, tenant)
                            working.discard(tenant)
                        except asyncpg.PostgresError as exc:
                            failed = True
                            log.warning("could not number the change events of %s (will "
                                        "retry): %r", tenant, exc)
                    if loop.time() >= next_trim:
                        next_trim = loop.time() + self.trim_every_s
                        await self.trim(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried: the events stay recorded
                failed = True
                log.warning("could not number change events (will retry): %r", exc)
            self._dirty |= working
            if failed:
                await asyncio.sleep(SWEEP_S)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the task, then number what the last calls recorded (best effort: what is
        left, the others' sweep or the next start numbers)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn:
                for tenant in list(self._dirty):
                    await self._number_all(conn, tenant)
        except Exception as exc:  # noqa: BLE001
            log.warning("change events left unnumbered at stop: %r", exc)
