"""Point reads of nodes, coalesced across the calls in flight (a DataLoader).

Every get_node call — single, or a member of a batch — has passed its own authorization
when it asks here. The asks made in two turns of the event loop are answered by one query
(one pooled connection, one round trip) for all of them, keyed by (tenant, id) pairs, so
coalescing never widens what a call can read: each gets only the row with its own tenant
and id. A fetch is started on the turn after the first ask and takes the asks when it
runs, a turn later: a call waits at most that long for later ones. Asks made while
a fetch is in flight go into the next fetch, which runs alongside it (on another pooled
connection), up to `max_fetches` fetches at once: past that, asks wait for one to end and
go into the fetch that starts then. The fetches answer every tenant's asks, so they take
no tenant's share of the pool; the cap is what keeps a flood of reads (from one tenant or
many) from holding more of the pool than that. A fetch whose documents may take more
than `max_bytes` (more asks than that many of the largest documents) reads them only
while the ones before them take at most that: the asks it left out go first into the
next fetch. Asks are taken tenant by tenant in turn, each tenant's in the order asked, so
one tenant's many large documents never push another tenant's ask out of a fetch. A read
that arrives after a write was acknowledged is fetched after it, so it sees that write."""
from __future__ import annotations

import asyncio
import re
from itertools import zip_longest
from typing import Any, Callable
from uuid import UUID

import asyncpg

from rpc_server.storage.repositories import NodeRepository
from rpc_server.storage.response_budget import ROW_OVERHEAD, text_bytes

Key = tuple[UUID, UUID]  # (tenant id, node id)


def tenant_by_tenant(keys: list[Key]) -> list[Key]:
    """The keys with the tenants taking turns, each tenant's in their order."""
    by_tenant: dict[UUID, list[Key]] = {}
    for key in keys:
        by_tenant.setdefault(key[0], []).append(key)
    if len(by_tenant) == 1:
        return keys
    return [key for turn in zip_longest(*by_tenant.values()) for key in turn if key is not None]


class NodeReads:
    def __init__(self, connection: Callable, max_fetches: int, max_bytes: int,
                 largest_document: int):
        self.connection = connection  # () -> async context manager of a pooled connection
        self.max_fetches = max_fetches
        self.max_bytes = max_bytes  # of documents one fetch reads (and one past it)
        # asks a fetch reads without counting bytes (that query costs the database less)
        self.uncounted = max(1, max_bytes // largest_document)
        # each caller its own future: one caller cancelled (a client gone) cancels no other
        self._pending: dict[Key, list[asyncio.Future]] = {}
        self._fetches: set[asyncio.Task] = set()  # held: the loop keeps only weak references
        self._start_due = False  # a fetch is to start on the next turn

    async def fetch(self, keys: list[Key]) -> list[tuple[asyncpg.Record | None, bool]]:
        """The node of each key, or None, and whether its document was left out (past
        max_bytes): one query, now."""
        tenant_ids, node_ids = [k[0] for k in keys], [k[1] for k in keys]
        async with self.connection() as conn:
            nodes = NodeRepository(conn)
            if len(keys) <= self.uncounted:  # (one document is read whatever its size)
                return [(row, False) for row in await nodes.get_pairs(tenant_ids, node_ids)]
            return await nodes.get_pairs_within(tenant_ids, node_ids, self.max_bytes,
                                                starting=True)

    async def get(self, tenant_id: UUID, node_id: UUID) -> asyncpg.Record | None:
        loop = asyncio.get_running_loop()
        if not self._start_due and len(self._fetches) < self.max_fetches:
            self._start_due = True  # the first ask of this turn: fetch after the others ask
            loop.call_soon(self._start_fetch)
        future = loop.create_future()
        waiting = self._pending.get((tenant_id, node_id))
        if waiting is None:
            self._pending[(tenant_id, node_id)] = [future]
        else:
            waiting.append(future)
        return await future

    def _start_fetch(self) -> None:
        if not self._pending:  # (nothing asked since the last fetch started)
            self._start_due = False
            return
        # The task takes the asks when it first runs, a turn later: with those made in
        # this turn (a third fewer fetches for the same reads, under load, than taking
        # them now: each fetch costs a round trip and its statement).
        task = asyncio.get_running_loop().create_task(self._fetch())
        self._fetches.add(task)
        task.add_done_callback(self._fetch_ended)

    def _fetch_ended(self, task: asyncio.Task) -> None:
        self._fetches.discard(task)
        if self._pending and not self._start_due:  # asks that waited for a fetch to end
            self._start_due = True
            asyncio.get_running_loop().call_soon(self._start_fetch)

    async def _fetch(self) -> None:
        self._start_due = False
        pending, self._pending = self._pending, {}
        if not pending:
            return
        if len(pending) > 1:
            pending = {key: pending[key] for key in tenant_by_tenant(list(pending))}
        try:
            rows = await self.fetch(list(pending))
            left_out: dict[Key, list[asyncio.Future]] = {}
            for (key, futures), (row, cut) in zip(pending.items(), rows):
                if cut:
                    left_out[key] = futures
                    continue
                for future in futures:
                    if not future.done():
                        future.set_result(row)
            if left_out:  # first into the next fetch, with whoever asked for them since
                for key, futures in self._pending.items():
                    left_out.setdefault(key, []).extend(futures)
                self._pending = left_out
        except BaseException as exc:  # every waiting call gets the failure
            for futures in pending.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise


_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                        r"[0-9a-fA-F]{12}")


def get_node_keys(members: list) -> list[tuple[str, str]]:
    """The (tenant_id, id) texts of a batch's get_node members (the others are looked up
    when they run, or report their own errors)."""
    keys = []
    for member in members:
        if type(member) is dict and member.get("method") == "get_node":
            params = member.get("params")
            if type(params) is dict:
                tenant_id, node_id = params.get("tenant_id"), params.get("id")
                if type(tenant_id) is str and type(node_id) is str:
                    keys.append((tenant_id, node_id))
    return keys


async def prefetch_batch_nodes(context: Any, members: list) -> None:
    """Read the nodes a batch's get_node members ask for, before they run, in one query;
    each member then finds its row, or None (not found), in context.prefetched_nodes under
    its (tenant_id, id) without waiting (it still authorizes itself first). Only tenants
    the caller may read are read. A row is filed under its own tenant and id as the
    database returns them, so a member can only ever find the node it names."""
    keys = get_node_keys(members)
    if len(keys) < 2:
        return
    tenants = {}
    for tenant_text in {t for t, _ in keys}:
        try:
            tenants[tenant_text] = UUID(tenant_text)
        except ValueError:
            pass  # those members report invalid params
    roles = await asyncio.gather(*(context.role_in(t) for t in tenants.values()))
    readable = {text for text, role in zip(tenants, roles) if role is not None}
    keys = [k for k in keys if k[0] in readable]
    if not keys:
        return
    # Read ahead at most a page's worth of documents, within what the response may still
    # take (held under the batch's first tenant); members past it read their own node.
    budget, settings = context.budget, context.state.settings
    tenant = tenants[keys[0][0]]
    granted = await budget.reserve(tenant, min(
        len(keys) * (settings.max_body_bytes + ROW_OVERHEAD), settings.max_page_bytes))
    rows: list = []
    try:
        # One malformed id fails the query (DataError): the members are then read one by one.
        # The connection is one of that tenant's share of the pool, as its members' would be.
        async with context.state.node_reads.connection(
                shares=context.state.pool_shares, tenant_id=tenant) as conn:
            rows = await NodeRepository(conn).get_pairs_within(
                [t for t, _ in keys], [i for _, i in keys], granted)
    finally:
        await budget.settle(tenant, granted, sum(
            text_bytes(row["data"]) + ROW_OVERHEAD for row, _ in rows
            if row is not None and row["data"] is not None))
    found: dict[tuple, asyncpg.Record | None] = {}
    answered: set[tuple[str, str]] = set()
    for (tenant_text, id_text), (row, cut) in zip(keys, rows):
        if cut:
            continue  # not read ahead: the member reads it, within its own budget
        answered.add((tenant_text, id_text))
        if row is not None:
            found[(row["tenant_id"], row["id"])] = row
        elif _UUID_TEXT.fullmatch(tenant_text) and _UUID_TEXT.fullmatch(id_text):
            # not found: filed under the ids only in the spelling parsed alike everywhere
            found[(UUID(tenant_text), UUID(id_text))] = None
    context.prefetched_nodes = found
    context.prefetched_keys = answered
