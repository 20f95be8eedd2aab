"""Tenant methods: create_tenant, get_tenant, update_tenant, delete_tenant, list_tenants."""
from __future__ import annotations

from ..params import Id, Name, PaginationParam, Params, Slug, Status, Version
from ..registry import rpc_method
from ..repositories import TenantRepository
from .common import DELETED, changes_of, require_changes

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


@rpc_method(CreateTenant)
async def create_tenant(ctx, p: CreateTenant) -> dict:
    """Create a tenant with a unique slug."""
    async with ctx.transaction() as conn:
        row = await TenantRepository(conn).create(p.slug, p.name)
    return {"tenant": ctx.shaper.one(row)}


@rpc_method(TenantId)
async def get_tenant(ctx, p: TenantId) -> dict:
    """Get a tenant by id."""
    async with ctx.connection() as conn:
        row = await TenantRepository(conn).get(p.id)
    return {"tenant": ctx.shaper.one(row)}


@rpc_method(UpdateTenant)
async def update_tenant(ctx, p: UpdateTenant) -> dict:
    """Update a tenant's slug, name or status."""
    changes = changes_of(p, UPDATABLE)
    require_changes(changes, UPDATABLE)
    async with ctx.transaction() as conn:
        row = await TenantRepository(conn).update(p.id, changes, p.expected_version)
    return {"tenant": ctx.shaper.one(row)}


@rpc_method(TenantId)
async def delete_tenant(ctx, p: TenantId) -> dict:
    """Delete a tenant and everything it owns."""
    async with ctx.transaction() as conn:
        await TenantRepository(conn).delete(p.id)
    return DELETED


@rpc_method(ListTenants)
async def list_tenants(ctx, p: ListTenants) -> dict:
    """List tenants, oldest first."""
    async with ctx.connection() as conn:
        page = await TenantRepository(conn).list(p.pagination)
    return ctx.shaper.page("tenants", page)
