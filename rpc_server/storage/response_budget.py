"""Bounds on what responses hold: one response (a single call or a whole batch) at most
FLEXDB_MAX_RESPONSE_BYTES, and one worker at most FLEXDB_RESPONSE_MEMORY_BYTES of documents
read for responses not yet written (one tenant at most half of it).

A call that reads documents asks first for what it may read: its worst case, cut to what is
left of its response's budget (a list page of 1,000 rows must not read 1,000 MB to find that
out). That ask also waits while the worker's or the tenant's memory for responses is full,
until responses are written, up to FLEXDB_DB_CONNECT_TIMEOUT_S, then the call answers
-32005 busy. Reading is capped by what was granted (a page stops early, with a
next_page_token for the rest); what was actually read is then held until the response has
been written, once the response's documents take more than WRITTEN_AT_ONCE_BYTES (a smaller
response is not held: the transport takes it whole without waiting for the client, so it
leaves the worker's hands as soon as it is built, and most calls skip the accounting).
Reads in flight are not held in advance: each is capped (get_node calls read
together by one query too: caching/batch_reads.py), and there are at most as many as pooled
connections, so what they add beyond the limit is bounded too. A call
whose response has no budget left answers -32006 `response_too_large`, and the batch's
other members still answer.

Large responses (documents read past LARGE_RESPONSE_BYTES) cost the worker and the database
far more than their count says (reading, then sending megabytes), so one tenant has at most
FLEXDB_TENANT_LARGE_RESPONSES of them in flight per worker: a response takes one of its
tenant's slots when it reads past that size (the tenant of the call that does), once per
response whatever its members do (a batch never waits for itself), and gives it back when it
has been written. While the tenant's slots are all taken, its further calls that may read
more than one document (a list page, a walk, a batch's read-ahead, or any read of a response
that already holds documents) wait for one before they read; past FLEXDB_DB_CONNECT_TIMEOUT_S
they answer -32005 busy. A call that reads one document into an empty response (get_node)
never waits for a slot, so small calls pay one comparison for this."""
from __future__ import annotations

import asyncio
from typing import Protocol
from uuid import UUID

from rpc_server.errors import Busy, QueryRejected

# What a row costs in a response beside its documents (ids, timestamps, keys).
ROW_OVERHEAD = 256
# A response that reads more documents than this is large: it takes one of its tenant's slots.
LARGE_RESPONSE_BYTES = 1_048_576
# What a transport takes without waiting for the client (the high-water mark of asyncio's
# and uvloop's transports): a response whose documents take at most this is not held.
WRITTEN_AT_ONCE_BYTES = 65_536


class TenantSlots(Protocol):
    """Per-tenant slots (security.tenant_limits.TenantLimiter): acquire() waits for one or
    raises Busy naming its setting."""

    def full(self, tenant_id: UUID | None) -> bool: ...

    async def acquire(self, tenant_id: UUID | None) -> None: ...

    def release(self, tenant_id: UUID | None) -> None: ...


def text_bytes(text: str) -> int:
    """What text takes in a response (UTF-8): its length when it is ASCII (known without a
    scan), else its encoding's (up to 4 bytes a character)."""
    return len(text) if text.isascii() else len(text.encode())


def response_too_large(limit: int, setting: str = "FLEXDB_MAX_RESPONSE_BYTES") -> QueryRejected:
    return QueryRejected(f"The response would be larger than {limit} bytes ({setting}): ask "
                         "for fewer or smaller items per call or per batch",
                         type="response_too_large", max_bytes=limit)


class ResponseMemory:
    """One worker's account of document bytes read for responses not yet written."""

    def __init__(self, limit: int, wait_s: float, large: TenantSlots, one_document: int):
        self.limit, self.tenant_limit, self.wait_s = limit, limit // 2, wait_s
        self.large = large  # each tenant's slots for large responses in flight
        self.one_document = one_document  # a grant past this may read a large response
        self.held = 0
        self.by_tenant: dict[UUID | None, int] = {}
        self._freed = asyncio.Event()
        self._waiting = 0  # calls waiting in admit()

    def has_room(self, tenant_id: UUID | None) -> bool:
        return self.held < self.limit and self.by_tenant.get(tenant_id, 0) < self.tenant_limit

    async def admit(self, tenant_id: UUID | None) -> None:
        """Return once the worker and the tenant hold less than their limits (at once,
        almost always), or raise Busy after the wait."""
        if self.has_room(tenant_id):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while not self.has_room(tenant_id):
            self._freed.clear()
            self._waiting += 1
            try:
                await asyncio.wait_for(self._freed.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                raise Busy("Responses being sent hold this server's memory for them "
                           "(FLEXDB_RESPONSE_MEMORY_BYTES); retry shortly") from None
            finally:
                self._waiting -= 1

    def hold(self, tenant_id: UUID | None, size: int) -> None:
        self.held += size
        self.by_tenant[tenant_id] = self.by_tenant.get(tenant_id, 0) + size

    def give_back(self, tenant_id: UUID | None, size: int) -> None:
        if not size:
            return
        self.held -= size
        left = self.by_tenant[tenant_id] - size
        if left:
            self.by_tenant[tenant_id] = left
        else:
            del self.by_tenant[tenant_id]
        self.freed()

    def freed(self) -> None:
        """Memory was given back: wake the calls waiting in admit() (none, almost always)."""
        if self._waiting:
            self._freed.set()


class ResponseBudget:
    """One HTTP request's share: what its response may still take, what it holds of the
    worker's memory until it is written (close()), and its tenant's large-response slot
    once it needs one."""

    def __init__(self, memory: ResponseMemory, limit: int):
        self.memory, self.limit = memory, limit
        self.committed = 0  # bytes granted or used by the request's calls
        self.used = 0  # bytes of documents read
        self.held: dict[UUID | None, int] = {}
        # Taking the tenant's large-response slot (at most once: a batch's members share it)
        self._slot: asyncio.Future | None = None
        self._slot_tenant: UUID | None = None

    # reserve() and settle() run for every call that reads documents but a lone one
    # (RequestContext.grant_alone), so their common paths avoid coroutines of their own.

    async def reserve(self, tenant_id: UUID | None, worst_case: int) -> int:
        """Grant up to `worst_case` bytes of what is left of the response (settle() it after
        reading), once the worker's and the tenant's memory for responses has room (and,
        for a read that may be large while the tenant's large responses are all in flight,
        once the response has one of its slots)."""
        granted = worst_case
        left = self.limit - self.committed
        if worst_case > left:
            if left < ROW_OVERHEAD:
                raise response_too_large(self.limit)
            granted = left
        memory = self.memory
        if self._slot is None and (granted > memory.one_document or self.used) \
                and memory.large.full(tenant_id):
            await self._take_slot(tenant_id)
        if not memory.has_room(tenant_id):
            await memory.admit(tenant_id)  # (almost never)
        self.committed += granted
        return granted

    async def settle(self, tenant_id: UUID | None, granted: int, used: int) -> None:
        """What was read is held until the response is written; the rest of the grant goes
        back to the response. Read past the grant (a document stored before a limit was
        lowered): the call fails with response_too_large if the response cannot take it.
        The read that takes the response past LARGE_RESPONSE_BYTES takes a slot for it."""
        self.committed += used - granted
        if used > granted and self.committed > self.limit:
            raise response_too_large(self.limit)
        if used:
            total = self.used = self.used + used
            if total > WRITTEN_AT_ONCE_BYTES:
                # held from the read that takes the response past it, with what was read
                # before it (under this call's tenant)
                hold = used if self.held else total
                self.memory.hold(tenant_id, hold)
                self.held[tenant_id] = self.held.get(tenant_id, 0) + hold
                if total > LARGE_RESPONSE_BYTES and self._slot is None:
                    await self._take_slot(tenant_id)

    async def _take_slot(self, tenant_id: UUID | None) -> None:
        """Take a large-response slot of the tenant for this response, or wait for the
        one being taken (a batch's members ask at once); Busy after the wait."""
        if self._slot is None:
            self._slot_tenant = tenant_id
            self._slot = asyncio.ensure_future(self.memory.large.acquire(tenant_id))
        await asyncio.shield(self._slot)

    def close(self) -> None:
        """The response has been written: give back everything held."""
        if self.held:  # (a response past WRITTEN_AT_ONCE_BYTES)
            for tenant_id, size in self.held.items():
                self.memory.give_back(tenant_id, size)
            self.held.clear()
        slot, self._slot = self._slot, None
        if slot is not None:
            if not slot.done():
                slot.cancel()  # (a member gave up waiting: the acquire ends holding nothing)
            elif not slot.cancelled() and slot.exception() is None:
                self.memory.large.release(self._slot_tenant)
