"""Refused calls, counted: every call refused as unauthenticated, forbidden or not found
adds one to (interval, source, method, outcome) here, and a task writes the counts every
few seconds in one statement (storage/repositories/denied_calls.py). So neither the table nor the
work grows with the attempts: a flood of calls with no valid credentials, batched and aimed
at random tenant ids, is one count per interval. The source is what the caller cannot vary
freely (never the tenant it claims): its API key, or without valid credentials its client
address, an IPv6 address by its /64 (one host is given a whole /64).

Neither may the table grow without bound: past FLEXDB_DENIED_CALLS_MAX_SOURCES client
addresses in one interval (across all servers, counted by the database), further ones are
counted as OTHERS, and counts older than FLEXDB_DENIED_CALLS_RETENTION_DAYS are deleted, a
bounded batch per pass (sooner again while batches come back full)."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
from datetime import datetime, timedelta, timezone

import asyncpg

from rpc_server.audit.events import DENIED_WINDOW_S as INTERVAL_S
from rpc_server.storage.repositories.denied_calls import DeniedCallRepository

log = logging.getLogger(__name__)
FLUSH_S = 5.0
MAX_COUNTS = 10_000  # counts held between writes; past it new sources count as OTHERS
OTHERS = "others"
ADDRESS = "address:"  # the sources of callers without valid credentials
PRUNE_S = 60.0  # between passes deleting expired counts (FLUSH_S while batches are full)
PRUNE_BATCH = 10_000  # counts deleted at most per pass


def source_of(principal, client_address: str | None) -> str:
    """Who was refused: the API key (of the caller, or behind a run's token), else the
    client's address."""
    if principal is not None:
        key_id = principal.key_id or (principal.run.key_id if principal.run else None)
        if key_id is not None:
            return f"key:{key_id}"
        return f"user:{principal.user_id}" if principal.user_id else "anonymous"
    try:
        address = ipaddress.ip_address(client_address or "")
    except ValueError:
        return f"{ADDRESS}unknown"
    if address.version == 6:
        if address.ipv4_mapped is None:
            return f"{ADDRESS}{ipaddress.ip_network((address, 64), strict=False)}"
        address = address.ipv4_mapped
    return f"{ADDRESS}{address}"


def interval_start(moment: datetime) -> datetime:
    seconds = moment.timestamp()
    return datetime.fromtimestamp(seconds - seconds % INTERVAL_S, timezone.utc)


class DeniedCalls:
    def __init__(self, pool: asyncpg.Pool, acquire_timeout_s: float, max_sources: int,
                 retention_days: int):
        self.pool, self.acquire_timeout_s = pool, acquire_timeout_s
        self.max_sources, self.retention = max_sources, timedelta(days=retention_days)
        # (interval start, source, method, outcome) -> [count, last attempt]
        self._counts: dict[tuple, list] = {}
        self._task: asyncio.Task | None = None
        # One write at a time: a flush that finds the counts already taken by one in flight
        # must still not return before that one has written them.
        self._flushing = asyncio.Lock()

    def note(self, source: str, method: str, outcome: str) -> None:
        now = datetime.now(timezone.utc)
        key = (interval_start(now), source, method, outcome)
        if key not in self._counts and len(self._counts) >= MAX_COUNTS:
            key = (key[0], OTHERS, method, outcome)
        entry = self._counts.setdefault(key, [0, now])
        entry[0] += 1
        entry[1] = now

    async def flush(self) -> None:
        """Write the counts held here (before reading them; other servers write theirs
        within FLUSH_S). On failure they are kept for the next try."""
        async with self._flushing:
            if not self._counts:
                return
            counts, self._counts = self._counts, {}
            try:
                async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn:
                    await DeniedCallRepository(conn).add(
                        [(*key, count, last) for key, (count, last) in counts.items()],
                        capped_prefix=ADDRESS, max_sources=self.max_sources, others=OTHERS)
            except BaseException:
                for key, (count, last) in counts.items():
                    entry = self._counts.setdefault(key, [0, last])
                    entry[0] += count
                    entry[1] = max(entry[1], last)
                raise

    async def prune(self) -> int:
        """Delete one batch of counts older than the retention; how many were deleted."""
        before = datetime.now(timezone.utc) - self.retention
        async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn:
            return await DeniedCallRepository(conn).prune(before, PRUNE_BATCH)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - kept, written next time
                log.warning("could not write the counts of refused calls (will retry): %r",
                            exc)
            if loop.time() < next_prune:
                continue
            next_prune = loop.time() + PRUNE_S
            try:
                if await self.prune() == PRUNE_BATCH:  # more to delete: next tick again
                    next_prune = loop.time()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - tried again next pass
                log.warning("could not delete expired counts of refused calls: %r", exc)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001
            log.warning("counts of refused calls lost at stop: %r", exc)
