"""User methods, and tenant membership: add_user_to_tenant, remove_user_from_tenant,
list_tenant_users."""
from __future__ import annotations

from typing import Literal

from ..params import Email, Id, Name, PaginationParam, Params, Version
from ..registry import rpc_method
from ..repositories import UserRepository
from ..repositories.users import MembershipRepository
from .common import DELETED, changes_of, require_changes, require_tenant

UPDATABLE = ("email", "display_name")
Role = Literal["owner", "admin", "member", "viewer"]


class CreateUser(Params):
    email: Email
    display_name: Name


class UserId(Params):
    id: Id


class UpdateUser(Params):
    id: Id
    email: Email | None = None
    display_name: Name | None = None
    expected_version: Version | None = None


class ListUsers(Params):
    pagination: PaginationParam


class AddUserToTenant(Params):
    tenant_id: Id
    user_id: Id
    role: Role = "member"


class RemoveUserFromTenant(Params):
    tenant_id: Id
    user_id: Id


class ListTenantUsers(Params):
    tenant_id: Id
    pagination: PaginationParam


@rpc_method(CreateUser)
async def create_user(ctx, p: CreateUser) -> dict:
    """Create a user with a unique email."""
    async with ctx.transaction() as conn:
        row = await UserRepository(conn).create(p.email, p.display_name)
    return {"user": ctx.shaper.one(row)}


@rpc_method(UserId)
async def get_user(ctx, p: UserId) -> dict:
    """Get a user by id."""
    async with ctx.connection() as conn:
        row = await UserRepository(conn).get(p.id)
    return {"user": ctx.shaper.one(row)}


@rpc_method(UpdateUser)
async def update_user(ctx, p: UpdateUser) -> dict:
    """Update a user's email or display name."""
    changes = changes_of(p, UPDATABLE)
    require_changes(changes, UPDATABLE)
    async with ctx.transaction() as conn:
        row = await UserRepository(conn).update(p.id, changes, p.expected_version)
    return {"user": ctx.shaper.one(row)}


@rpc_method(UserId)
async def delete_user(ctx, p: UserId) -> dict:
    """Delete a user and their tenant memberships."""
    async with ctx.transaction() as conn:
        await UserRepository(conn).delete(p.id)
    return DELETED


@rpc_method(ListUsers)
async def list_users(ctx, p: ListUsers) -> dict:
    """List users, oldest first."""
    async with ctx.connection() as conn:
        page = await UserRepository(conn).list(p.pagination)
    return ctx.shaper.page("users", page)


@rpc_method(AddUserToTenant)
async def add_user_to_tenant(ctx, p: AddUserToTenant) -> dict:
    """Make a user a member of a tenant with a role (owner, admin, member, viewer)."""
    async with ctx.transaction() as conn:
        row = await MembershipRepository(conn).add(p.tenant_id, p.user_id, p.role)
    return {"tenant_user": ctx.shaper.one(row)}


@rpc_method(RemoveUserFromTenant)
async def remove_user_from_tenant(ctx, p: RemoveUserFromTenant) -> dict:
    """Remove a user's membership of a tenant."""
    async with ctx.transaction() as conn:
        await MembershipRepository(conn).remove(p.tenant_id, p.user_id)
    return DELETED


@rpc_method(ListTenantUsers)
async def list_tenant_users(ctx, p: ListTenantUsers) -> dict:
    """List a tenant's members."""
    async with ctx.connection() as conn:
        await require_tenant(conn, p.tenant_id)
        page = await MembershipRepository(conn).list(p.tenant_id, p.pagination)
    return ctx.shaper.page("tenant_users", page)
