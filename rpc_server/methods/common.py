"""Small helpers shared by the method groups."""
from __future__ import annotations

from uuid import UUID

import orjson

from rpc_server.api.context import Call
from rpc_server.api.params import Params
from rpc_server.api.registry import REGISTRY
from rpc_server.errors import InvalidParams, NotFound, QuotaExceeded
from rpc_server.storage.db import Connection
from rpc_server.storage.pagination import Page
from rpc_server.storage.repositories import TenantRepository
from rpc_server.storage.response_budget import ROW_OVERHEAD, text_bytes

DELETED = {"success": True}


def changes_of(params: Params, fields: tuple[str, ...]) -> dict:
    """The update fields the caller sent with a value (absent or null = unchanged)."""
    return {f: getattr(params, f) for f in fields
            if f in params.model_fields_set and getattr(params, f) is not None}


def require_changes(changes: dict, fields: tuple[str, ...]) -> None:
    if not changes:
        raise InvalidParams.field("params", "nothing to update: give at least one of "
                                  + ", ".join(fields))


async def require_tenant(ctx: Call, conn: Connection, tenant_id: UUID) -> None:
    """Not found unless the tenant exists, for the methods registered tenant_must_exist=True
    (only they may call this, so the registry says which methods check). A member's role
    already proves it (authorize checked it); only platform admins, who skip the membership
    check, need the query, and the handler runs it only where its data does not prove it."""
    if not REGISTRY[ctx.method].tenant_must_exist:
        raise RuntimeError(f"{ctx.method} checks that its tenant exists: register it with "
                           "tenant_must_exist=True")
    if not (await ctx.principal()).is_platform_admin:
        return
    if not await TenantRepository(conn).exists(tenant_id):
        raise NotFound("tenant", tenant_id)


async def check_quota(ctx: Call, conn: Connection, tenant_id: UUID, nodes: int,
                      documents: list) -> None:
    """Refuse a write that would take the tenant past its caps on nodes or stored bytes
    (when set: FLEXDB_TENANT_MAX_NODES, FLEXDB_TENANT_MAX_BYTES). The documents count at
    their JSON size, whole (an update's growth is not known before it is stored). Checked
    before the write, not under a lock: writes in flight at the same moment may pass a
    cap by what they add."""
    settings = ctx.state.settings
    max_nodes, max_bytes = settings.tenant_max_nodes, settings.tenant_max_bytes
    if not (max_nodes and nodes) and not max_bytes:
        return
    usage = await TenantRepository(conn).usage(tenant_id)
    if max_nodes and nodes and usage["nodes"] + nodes > max_nodes:
        raise QuotaExceeded(f"The tenant holds {usage['nodes']} nodes; {nodes} more would pass "
                            "its cap", limit=max_nodes, usage=usage["nodes"],
                            setting="FLEXDB_TENANT_MAX_NODES")
    if max_bytes:
        adding = sum(len(orjson.dumps(d)) for d in documents)
        if usage["bytes"] + adding > max_bytes:
            raise QuotaExceeded(f"The tenant stores {usage['bytes']} bytes of documents; "
                                f"{adding} more would pass its cap", limit=max_bytes,
                                usage=usage["bytes"], setting="FLEXDB_TENANT_MAX_BYTES")


async def read_page(ctx: Call, pagination, row_worst_case: int, read) -> Page:
    """A list page read within what the call may read: at most FLEXDB_MAX_PAGE_BYTES and
    what is left of the response's budget. `read(max_bytes)` reads the page (it stops early
    once its rows' documents would take more; see pagination.within_bytes)."""
    worst_case = min((pagination.page_size + 1) * (row_worst_case + ROW_OVERHEAD),
                     ctx.state.settings.max_page_bytes)
    granted = ctx.request.grant_alone(ctx.tenant_id, worst_case)
    if granted:  # the response's only read (RequestContext.grant_alone)
        page = await read(granted)
        await ctx.settle_alone(page.bytes)
        return page
    granted = await ctx.reserve(worst_case)
    page = None
    try:
        page = await read(granted)
    finally:
        await ctx.settle(granted, page.bytes if page is not None else 0)
    return page


async def read_one(ctx: Call, worst_case: int, read, size_of):
    """One row whose documents may be large (up to `worst_case` bytes), read within what the
    response may still take; `size_of(row)` is what it takes."""
    granted = await ctx.reserve(worst_case + ROW_OVERHEAD)
    row = None
    try:
        row = await read()
    finally:
        await ctx.settle(granted, 0 if row is None else size_of(row) + ROW_OVERHEAD)
    return row


def json_size(*values) -> int:
    """Bytes of values as JSON (text values as they are)."""
    return sum(text_bytes(v) if isinstance(v, str) else len(orjson.dumps(v)) for v in values)
