"""Tenant methods: create_tenant, get_tenant, update_tenant, delete_tenant, list_tenants."""
from __future__ import annotations

from rpc_server.api import results
from rpc_server.api.context import Call
from rpc_server.api.params import Id, Name, PaginationParam, Params, Slug, Status, Version
from rpc_server.api.registry import rpc_method
from rpc_server.errors import QuotaExceeded
from rpc_server.methods.common import DELETED, changes_of, require_changes, require_tenant
from rpc_server.security.auth import AUTHENTICATED, tenant_role
from rpc_server.storage.repositories import TenantRepository
from rpc_server.storage.repositories.users import MembershipRepository

UPDATABLE = ("slug", "name", "status")


class CreateTenant(Params):
    slug: Slug
    name: Name


class TenantId(Params):
    id: Id


class UpdateTenant(Params):
    id: Id
    slug: Slug | None = None
    name: Name | None = None
    status: Status | None = None
    expected_version: Version | None = None


class ListTenants(Params):
    pagination: PaginationParam


@rpc_method(CreateTenant, AUTHENTICATED, result=results.TenantResult,
             run_db=None, tenant_must_exist=False)
async def create_tenant(ctx: Call, p: CreateTenant) -> dict:
    """Create a tenant with a unique slug; the caller becomes its owner."""
    principal = await ctx.principal()
    cap = ctx.state.settings.max_tenants_per_user
    async with ctx.transaction() as conn:
        tenants = TenantRepository(conn)
        if cap and principal.user_id is not None and not principal.is_platform_admin:
            owned = await tenants.lock_owned_by(principal.user_id)
            if owned >= cap:
                raise QuotaExceeded(f"You own {owned} tenants already, the most a user may",
                                    limit=cap, usage=owned, setting="FLEXDB_MAX_TENANTS_PER_USER")
        row = await tenants.create(p.slug, p.name)
        ctx.set_target("tenant", row["id"], tenant=row["id"])
        if principal.user_id is not None:
            await MembershipRepository(conn).add(row["id"], principal.user_id, "owner")
    return {"tenant": ctx.shaper.one(row)}


@rpc_method(TenantId, tenant_role("viewer", "id"), result=results.TenantResult,
             run_db=None, tenant_must_exist=False)
async def get_tenant(ctx: Call, p: TenantId) -> dict:
    """Get a tenant by id."""
    async with ctx.connection() as conn:
        row = await TenantRepository(conn).get(p.id)
    return {"tenant": ctx.shaper.one(row)}


class TenantUsageParams(Params):
    tenant_id: Id


@rpc_method(TenantUsageParams, tenant_role("admin"), result=results.TenantUsageResult,
             run_db=None, tenant_must_exist=True)
async def get_tenant_usage(ctx: Call, p: TenantUsageParams) -> dict:
    """What a tenant stores (nodes, bytes of documents) against its caps."""
    async with ctx.connection() as conn:
        await require_tenant(ctx, conn, p.tenant_id)
        usage = await TenantRepository(conn).usage(p.tenant_id)
    settings = ctx.state.settings
    return {"usage": {"nodes": usage["nodes"], "bytes": usage["bytes"],
                      "max_nodes": settings.tenant_max_nodes or None,
                      "max_bytes": settings.tenant_max_bytes or None}}


@rpc_method(UpdateTenant, tenant_role("owner", "id"), result=results.TenantResult,
             run_db=None, tenant_must_exist=False)
async def update_tenant(ctx: Call, p: UpdateTenant) -> dict:
    """Update a tenant's slug, name or status."""
    changes = changes_of(p, UPDATABLE)
    require_changes(changes, UPDATABLE)
    async with ctx.transaction() as conn:
        row = await TenantRepository(conn).update(p.id, changes, p.expected_version)
    return {"tenant": ctx.shaper.one(row)}


@rpc_method(TenantId, tenant_role("owner", "id"), result=results.Deleted,
             run_db=None, tenant_must_exist=False)
async def delete_tenant(ctx: Call, p: TenantId) -> dict:
    """Delete a tenant and everything it owns."""
    async with ctx.transaction() as conn:
        await TenantRepository(conn).delete(p.id)
    ctx.state.auth.forget_tenant(p.id)
    return DELETED


@rpc_method(ListTenants, AUTHENTICATED, result=results.TenantList,
             run_db=None, tenant_must_exist=False)
async def list_tenants(ctx: Call, p: ListTenants) -> dict:
    """List the caller's tenants (all of them for a platform admin), oldest first."""
    principal = await ctx.principal()
    member_of = None if principal.is_platform_admin else principal.user_id
    async with ctx.connection() as conn:
        page = await TenantRepository(conn).list(p.pagination, member_of)
    return ctx.shaper.page("tenants", page)
