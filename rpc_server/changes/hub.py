"""One per server process: hears (LISTEN) each tenant's new last position, reads the new events
once, and keeps the recent ones of tenants that have open streams here in memory, so a hundred
streams of one tenant cost one read per numbering round, not a hundred.

A stream asks `events_after(cursor)`: the events after its position from memory, or None when
its position is older than what memory holds (it then reads the database, and comes back once
it has caught up). Memory is bounded per tenant (TAIL_EVENTS, TAIL_BYTES) and in all
(HUB_BYTES, shared out among the tenants followed). Notifications lost
while the listening connection was down are made up for by re-reading every tail's head when it
is back, and every POLL_S in any case."""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable
from uuid import UUID

import asyncpg

from rpc_server.changes.events import FeedEvent
from rpc_server.storage.repositories.changes import CHANNEL, ChangeRepository

log = logging.getLogger(__name__)
TAIL_EVENTS = 20_000
TAIL_BYTES = 16 * 1024 * 1024
HUB_BYTES = 64 * 1024 * 1024  # all tails of one process together
READ_BATCH = 1000
READ_BYTES = 1024 * 1024  # what one read holds at most (the first event whatever its size)
POLL_S = 5.0
RECONNECT_S = 1.0


class Tail:
    """A tenant's recent events, dense from `start` + 1 through `last` (a list whose first
    `dropped` entries are gone: a slice anywhere in it costs only its own length)."""

    def __init__(self, tenant_id: UUID, max_bytes: Callable[[], int]):
        self.tenant_id, self.max_bytes = tenant_id, max_bytes
        self.events: list[FeedEvent] = []
        self.dropped = 0
        self.bytes = 0
        self.start = -1  # -1: not read yet (every stream reads the database meanwhile)
        self.last = -1
        self.streams = 0
        self._sleepers: list[asyncio.Future] = []  # streams waiting for the next events
        self.wanted = asyncio.Event()  # set when a position past `last` is announced
        self.task: asyncio.Task | None = None

    def events_after(self, position: int, limit: int) -> list[FeedEvent] | None:
        if self.start < 0 or position < self.start:
            return None
        first = self.dropped + position - self.start
        return self.events[first:first + limit]

    def sleeper(self) -> asyncio.Future:
        """A future that completes when events next arrive (a stream's wait; wake() ends it
        early). A plain future: no Task per wait, the costliest part of a wake-up."""
        future = asyncio.get_running_loop().create_future()
        self._sleepers.append(future)
        return future

    def clear(self, start: int) -> None:
        self.events, self.dropped, self.bytes = [], 0, 0
        self.start = self.last = start

    def add(self, events: list[FeedEvent]) -> None:
        for event in events:
            self.events.append(event)
            self.bytes += len(event.sse)
        if events:
            self.last = events[-1].position
        max_bytes = self.max_bytes()
        while len(self.events) > self.dropped and (
                len(self.events) - self.dropped > TAIL_EVENTS or self.bytes > max_bytes):
            gone = self.events[self.dropped]
            self.dropped += 1
            self.bytes -= len(gone.sse)
            self.start = gone.position
        if self.dropped > len(self.events) // 2:  # compact now and then
            del self.events[:self.dropped]
            self.dropped = 0
        sleepers, self._sleepers = self._sleepers, []
        for future in sleepers:
            wake(future)


def wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class FeedHub:
    def __init__(self, pool: asyncpg.Pool, connect: Callable[[], Awaitable[asyncpg.Connection]],
                 acquire_timeout_s: float):
        self.pool, self.connect, self.acquire_timeout_s = pool, connect, acquire_timeout_s
        self.tails: dict[UUID, Tail] = {}
        # Also told of every new position (with its tenant) and of every reconnection (None:
        # any tenant) (the webhook worker): one listening connection per process.
        self.on_change: Callable[[UUID | None], None] | None = None
        self._listener: asyncio.Task | None = None
        self.closing = asyncio.Event()  # set when the server stops: streams end

    def open(self, tenant_id: UUID) -> Tail:
        """A stream of `tenant_id` starts: its tail (made and filled from now on if new)."""
        tail = self.tails.get(tenant_id)
        if tail is None:
            tail = self.tails[tenant_id] = Tail(tenant_id, self._share)
            tail.task = asyncio.get_running_loop().create_task(self._follow(tail))
        tail.streams += 1
        return tail

    def _share(self) -> int:
        """What one tail may hold: TAIL_BYTES, less when many tenants are followed here (all
        together at most HUB_BYTES)."""
        return min(TAIL_BYTES, HUB_BYTES // max(1, len(self.tails)))

    def close(self, tail: Tail) -> None:
        tail.streams -= 1
        if tail.streams == 0 and self.tails.get(tail.tenant_id) is tail:
            del self.tails[tail.tenant_id]
            if tail.task is not None:
                tail.task.cancel()

    async def _follow(self, tail: Tail) -> None:
        """Read the tenant's new events into memory whenever its last position moves (and
        every POLL_S: a notification lost is late, never missed)."""
        while True:
            tail.wanted.clear()  # before reading: a notification during the read counts
            try:
                async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn:
                    repo = ChangeRepository(conn)
                    if tail.start < 0:
                        head, _ = await repo.head(tail.tenant_id)
                        tail.clear(head)
                        tail.add([])
                    while True:
                        window = await repo.read(tail.tenant_id, tail.last, READ_BATCH,
                                                 READ_BATCH, max_bytes=READ_BYTES)
                        if tail.last < window.trimmed_through:  # retention passed us: restart
                            tail.clear(window.head)
                            tail.add([])
                            continue
                        tail.add([FeedEvent.of(r) for r in window.rows])
                        if not window.rows or tail.last >= window.head:  # caught up
                            break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried; streams wait meanwhile
                log.warning("could not read change events of %s (will retry): %r",
                            tail.tenant_id, exc)
                await asyncio.sleep(RECONNECT_S)
                continue
            if not tail.wanted.is_set():
                try:
                    await asyncio.wait_for(tail.wanted.wait(), POLL_S)
                except asyncio.TimeoutError:
                    pass

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        tenant, _, last = str(payload).partition(":")
        try:
            tenant_id, position = UUID(tenant), int(last)
        except ValueError:
            log.warning("ignored a malformed change notification %r", str(payload)[:100])
            if self.on_change is not None:
                self.on_change(None)
            return
        if self.on_change is not None:
            self.on_change(tenant_id)
        tail = self.tails.get(tenant_id)
        if tail is not None and position > tail.last:
            tail.wanted.set()

    async def _listen(self) -> None:
        while True:
            conn = None
            try:
                conn = await self.connect()
                await conn.add_listener(CHANNEL, self._on_notify)
                for tail in self.tails.values():  # what was announced while we were away
                    tail.wanted.set()
                if self.on_change is not None:
                    self.on_change(None)
                while not conn.is_closed():
                    await asyncio.sleep(RECONNECT_S)
                    await conn.execute("SELECT 1", timeout=self.acquire_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnected
                log.warning("change notifications interrupted (reconnecting): %r", exc)
            finally:
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(RECONNECT_S)

    def start(self) -> None:
        self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        self.closing.set()
        tasks = [t.task for t in self.tails.values() if t.task is not None]
        if self._listener is not None:
            tasks.append(self._listener)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
