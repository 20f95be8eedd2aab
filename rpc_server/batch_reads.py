"""Point reads of one JSON-RPC batch, fetched together.

The members of a batch run concurrently; get_node members that ask in the same turn of
the event loop (they all do, unless one waited on something first) are answered by one
`id = ANY(...)` query per tenant instead of one query and one pooled connection each.
Each member has passed its own authorization first, and the tenant is part of every
lookup, so coalescing never widens what a member can read."""
from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Callable
from uuid import UUID

import asyncpg

from .repositories import NodeRepository


class NodeReads:
    def __init__(self, connection: Callable):
        self.connection = connection  # RequestContext.connection
        self._pending: dict[tuple[UUID, UUID], asyncio.Future] = {}
        self._fetches: set[asyncio.Task] = set()  # held: the loop keeps only weak references

    async def get(self, tenant_id: UUID, node_id: UUID) -> asyncpg.Record | None:
        key = (tenant_id, node_id)
        future = self._pending.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            if not self._pending:  # the first ask of this turn: fetch after the others ask
                loop.call_soon(self._start_fetch)
            future = self._pending[key] = loop.create_future()
        return await future

    def _start_fetch(self) -> None:
        task = asyncio.get_running_loop().create_task(self._fetch())
        self._fetches.add(task)
        task.add_done_callback(self._fetches.discard)

    async def _fetch(self) -> None:
        pending, self._pending = self._pending, {}
        by_tenant: dict[UUID, list[UUID]] = defaultdict(list)
        for tenant_id, node_id in pending:
            by_tenant[tenant_id].append(node_id)
        try:
            async with self.connection() as conn:
                repository = NodeRepository(conn)
                for tenant_id, ids in by_tenant.items():
                    found = await repository.get_many(tenant_id, ids)
                    for node_id in ids:
                        future = pending[(tenant_id, node_id)]
                        if not future.done():
                            future.set_result(found.get(node_id))
        except BaseException as exc:  # every waiting member gets the failure
            for future in pending.values():
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
