"""Pulling the change feed: list_changes (tenant viewers and above). The stream of the same
events is GET /events (api/event_stream.py)."""
from __future__ import annotations

from pydantic import Field

from rpc_server.api import results
from rpc_server.api.context import Call
from rpc_server.api.params import ChangeFilter, Id, Params
from rpc_server.api.registry import rpc_method
from rpc_server.changes.events import event_of
from rpc_server.changes.reading import read_after
from rpc_server.methods.common import require_tenant
from rpc_server.security.auth import tenant_role
from rpc_server.storage.repositories.changes import EVENT_OVERHEAD

MAX_CHANGES = 1000


class ListChanges(Params):
    tenant_id: Id
    after: int | None = Field(None, ge=0, le=2**62, description=(
        "The last position the reader has (`last_position` of its previous read, or an "
        "event's `position`); absent: from the oldest event kept."))
    filter: ChangeFilter | None = None
    limit: int = Field(100, ge=1, le=MAX_CHANGES)


@rpc_method(ListChanges, tenant_role("viewer"), result=results.ChangeList,
             run_db=None, tenant_must_exist=True)
async def list_changes(ctx: Call, p: ListChanges) -> dict:
    """List the tenant's change events after a position, oldest first: every committed change
    to its nodes, relationships, node types, pipelines and memberships, each once, in commit
    order. A position older than retention keeps: -32602 `position_expired` (resynchronise
    from the lists). A read stops early (see `last_position`) rather than pass the response's
    byte budget."""
    await ctx.state.sequencer.flush(p.tenant_id)  # read your own writes
    granted = await ctx.reserve(p.limit * (ctx.state.settings.feed_max_object_bytes
                                           + EVENT_OVERHEAD))
    async with ctx.connection() as conn:
        await require_tenant(ctx, conn, p.tenant_id)
        window = await read_after(conn, p.tenant_id, p.after, p.limit,
                                  p.filter.condition() if p.filter else None, granted)
    await ctx.settle(granted, sum(len(row["object"] or "") + EVENT_OVERHEAD
                                  for row in window.rows))
    return {"changes": [event_of(row) for row in window.rows],
            "last_position": window.scanned_to, "head": window.head}
