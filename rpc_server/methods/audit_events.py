"""Reading the audit trail: list_audit_events and verify_audit_chain (tenant admins; the
platform's own chain is tenant 00000000-0000-0000-0000-000000000000, for platform admins),
and list_denied_calls (platform admins): the counts of refused calls."""
from __future__ import annotations

import orjson
from pydantic import Field

from rpc_server.api import results
from rpc_server.api.context import Call
from rpc_server.api.params import Id, Moment, PaginationParam, Params
from rpc_server.api.registry import rpc_method
from rpc_server.audit import events as audit
from rpc_server.methods.common import require_tenant
from rpc_server.security.auth import PLATFORM_ADMIN, tenant_role
from rpc_server.storage.repositories.audit import AuditRepository
from rpc_server.storage.repositories.denied_calls import DeniedCallRepository


class ListAuditEvents(Params):
    tenant_id: Id
    actor: Id | None = None
    method: str | None = Field(None, max_length=100)
    target_id: str | None = Field(None, max_length=100)
    since: Moment | None = None
    until: Moment | None = None
    pagination: PaginationParam


VERIFY_TIMEOUT_MS = 600_000  # a trail of ~50 million events, at about 10 µs each


class VerifyAuditChain(Params):
    tenant_id: Id


class ListDeniedCalls(Params):
    source: str | None = Field(None, max_length=100)
    method: str | None = Field(None, max_length=100)
    since: Moment | None = None
    until: Moment | None = None
    pagination: PaginationParam


@rpc_method(ListDeniedCalls, PLATFORM_ADMIN, result=results.DeniedCallList,
             run_db=None, tenant_must_exist=False)
async def list_denied_calls(ctx: Call, p: ListDeniedCalls) -> dict:
    """List the counts of refused calls per interval, source, method and outcome, oldest
    first, filtered by source, method or time (this server's latest counts included; other
    servers write theirs every few seconds)."""
    await ctx.state.denied.flush()
    filters = (p.source, p.method, p.since, p.until)
    async with ctx.list_connection(any(f is not None for f in filters)) as conn:
        page = await DeniedCallRepository(conn).list(p.pagination, source=p.source,
                                                     method=p.method, since=p.since,
                                                     until=p.until)
    result = ctx.shaper.page("denied_calls", page)
    for count in result["denied_calls"]:
        del count["created_at"]  # (the page's sort key: interval_start)
    return result


@rpc_method(ListAuditEvents, tenant_role("admin"), result=results.AuditEventList,
             run_db=None, tenant_must_exist=True)
async def list_audit_events(ctx: Call, p: ListAuditEvents) -> dict:
    """List a tenant's audit events in chain order (seq), filtered by actor, method, target
    or time."""
    await ctx.state.chainer.flush(p.tenant_id)
    filters = (p.actor, p.method, p.target_id, p.since, p.until)
    async with ctx.list_connection(any(f is not None for f in filters)) as conn:
        await require_live_tenant(ctx, conn, p.tenant_id)
        page = await AuditRepository(conn).list(p.tenant_id, p.pagination, actor=p.actor,
                                                method=p.method, target_id=p.target_id,
                                                since=p.since, until=p.until)
    result = ctx.shaper.page("audit_events", page)
    for event in result["audit_events"]:  # (JSON text: written as it is, not parsed)
        event["summary"] = orjson.Fragment(event["summary"])
    return result


@rpc_method(VerifyAuditChain, tenant_role("admin"), result=results.AuditChainVerification,
             run_db=None, tenant_must_exist=True)
async def verify_audit_chain(ctx: Call, p: VerifyAuditChain) -> dict:
    """Recompute the tenant's hash chain: ok, or the first event where it breaks."""
    await ctx.state.chainer.flush(p.tenant_id)
    # Its work grows with the trail, not the request: one of the tenant's heavy calls.
    async with ctx.heavy(VERIFY_TIMEOUT_MS, "The chain's check") as conn:
        await require_live_tenant(ctx, conn, p.tenant_id)
        # One snapshot: events chained meanwhile must not look like a cut-off tail.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await AuditRepository(conn).verify(p.tenant_id)


async def require_live_tenant(ctx: Call, conn, tenant_id) -> None:
    """A deleted tenant's trail stays in the database (append-only), but like every
    tenant-scoped read it answers not-found once the tenant is gone. The platform's own
    chain has no tenant row."""
    if tenant_id != audit.PLATFORM_TENANT:
        await require_tenant(ctx, conn, tenant_id)
