"""User methods, and tenant membership: add_user_to_tenant, remove_user_from_tenant,
list_tenant_users."""
from __future__ import annotations

from typing import Literal

from rpc_server.api import results
from rpc_server.api.context import Call
from rpc_server.api.params import Email, Id, Name, PaginationParam, Params, Version
from rpc_server.api.registry import rpc_method
from rpc_server.errors import Conflict, Forbidden, NotFound
from rpc_server.methods.common import DELETED, changes_of, require_changes, require_tenant
from rpc_server.security.auth import AUTHENTICATED, PLATFORM_ADMIN, ROLE_RANK, tenant_role
from rpc_server.storage.repositories import UserRepository
from rpc_server.storage.repositories.users import MembershipRepository

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


class TenantUserId(Params):
    tenant_id: Id
    user_id: Id


class UpdateTenantUserRole(Params):
    tenant_id: Id
    user_id: Id
    role: Role


class ListTenantUsers(Params):
    tenant_id: Id
    pagination: PaginationParam


async def require_rank(ctx: Call, tenant_id, role: str, what: str) -> None:
    """Nobody grants, or acts on a member holding, a role above their own."""
    mine = await ctx.role_in(tenant_id)
    if mine is None or ROLE_RANK[role] > ROLE_RANK[mine]:
        raise Forbidden(f"cannot {what} the {role} role: it is above yours ({mine})",
                        role=mine, required_role=role)


async def lock_member(ctx: Call, members: MembershipRepository, tenant_id, user_id,
                      what: str) -> str:
    """Lock a membership for a change and return its role, if the caller may act on it."""
    current = await members.role_for_update(tenant_id, user_id)
    if current is None:
        raise NotFound("tenant_user", user_id)
    await require_rank(ctx, tenant_id, current, what)
    return current


async def keep_an_owner(members: MembershipRepository, tenant_id, current_role: str) -> None:
    if current_role == "owner" and await members.lock_owners(tenant_id) <= 1:
        raise Conflict("a tenant must keep at least one owner", field="user_id")


@rpc_method(CreateUser, PLATFORM_ADMIN, result=results.UserResult,
             run_db=None, tenant_must_exist=False)
async def create_user(ctx: Call, p: CreateUser) -> dict:
    """Create a user with a unique email."""
    async with ctx.transaction() as conn:
        row = await UserRepository(conn).create(p.email, p.display_name)
        ctx.set_target("user", row["id"])
    return {"user": ctx.shaper.one(row)}


@rpc_method(UserId, AUTHENTICATED, result=results.UserResult,
             run_db=None, tenant_must_exist=False)
async def get_user(ctx: Call, p: UserId) -> dict:
    """Get a user by id (yourself, or anyone for a platform admin)."""
    principal = await ctx.principal()
    if not principal.is_platform_admin and principal.user_id != p.id:
        raise NotFound("user", p.id)
    async with ctx.connection() as conn:
        row = await UserRepository(conn).get(p.id)
    return {"user": ctx.shaper.one(row)}


@rpc_method(UpdateUser, PLATFORM_ADMIN, result=results.UserResult,
             run_db=None, tenant_must_exist=False)
async def update_user(ctx: Call, p: UpdateUser) -> dict:
    """Update a user's email or display name."""
    changes = changes_of(p, UPDATABLE)
    require_changes(changes, UPDATABLE)
    async with ctx.transaction() as conn:
        row = await UserRepository(conn).update(p.id, changes, p.expected_version)
    return {"user": ctx.shaper.one(row)}


@rpc_method(UserId, PLATFORM_ADMIN, result=results.Deleted,
             run_db=None, tenant_must_exist=False)
async def delete_user(ctx: Call, p: UserId) -> dict:
    """Delete a user, their API keys and their tenant memberships."""
    async with ctx.transaction() as conn:
        await UserRepository(conn).delete(p.id)
    ctx.state.auth.forget_user(p.id)
    return DELETED


@rpc_method(ListUsers, PLATFORM_ADMIN, result=results.UserList,
             run_db=None, tenant_must_exist=False)
async def list_users(ctx: Call, p: ListUsers) -> dict:
    """List users, oldest first."""
    async with ctx.connection() as conn:
        page = await UserRepository(conn).list(p.pagination)
    return ctx.shaper.page("users", page)


@rpc_method(AddUserToTenant, tenant_role("admin"), result=results.TenantUserResult,
             run_db=None, tenant_must_exist=False)
async def add_user_to_tenant(ctx: Call, p: AddUserToTenant) -> dict:
    """Make a user a member of a tenant with a role (owner, admin, member, viewer); for a
    member already, change the role as update_tenant_user_role does (flex-db upserts)."""
    await require_rank(ctx, p.tenant_id, p.role, "grant")
    ctx.set_target("tenant_user", p.user_id)
    async with ctx.transaction() as conn:
        members = MembershipRepository(conn)
        row = await members.add_if_absent(p.tenant_id, p.user_id, p.role)
        if row is None:
            row = await change_role(ctx, members, p.tenant_id, p.user_id, p.role)
    ctx.state.auth.forget_membership(p.user_id, p.tenant_id)
    return {"tenant_user": ctx.shaper.one(row)}


@rpc_method(UpdateTenantUserRole, tenant_role("admin"), result=results.TenantUserResult,
             run_db=None, tenant_must_exist=False)
async def update_tenant_user_role(ctx: Call, p: UpdateTenantUserRole) -> dict:
    """Change a member's role; nobody grants above their own role, and the last owner
    stays an owner."""
    await require_rank(ctx, p.tenant_id, p.role, "grant")
    ctx.set_target("tenant_user", p.user_id)
    async with ctx.transaction() as conn:
        row = await change_role(ctx, MembershipRepository(conn), p.tenant_id, p.user_id, p.role)
    ctx.state.auth.forget_membership(p.user_id, p.tenant_id)
    return {"tenant_user": ctx.shaper.one(row)}


async def change_role(ctx: Call, members: MembershipRepository, tenant_id, user_id, role: str):
    """Set a member's role, if the caller may act on the member's current one and the
    tenant keeps an owner (the caller's right to grant `role` is checked already)."""
    current = await lock_member(ctx, members, tenant_id, user_id, "change a member with")
    if role != "owner":
        await keep_an_owner(members, tenant_id, current)
    return await members.set_role(tenant_id, user_id, role)


@rpc_method(TenantUserId, tenant_role("admin"), result=results.Deleted,
             run_db=None, tenant_must_exist=False)
async def remove_user_from_tenant(ctx: Call, p: TenantUserId) -> dict:
    """Remove a user's membership of a tenant (never the last owner)."""
    ctx.set_target("tenant_user", p.user_id)
    async with ctx.transaction() as conn:
        members = MembershipRepository(conn)
        current = await lock_member(ctx, members, p.tenant_id, p.user_id, "remove a member with")
        await keep_an_owner(members, p.tenant_id, current)
        await members.remove(p.tenant_id, p.user_id)
    ctx.state.auth.forget_membership(p.user_id, p.tenant_id)
    return DELETED


@rpc_method(TenantUserId, tenant_role("viewer"), result=results.TenantUserResult,
             run_db=None, tenant_must_exist=False)
async def get_tenant_user(ctx: Call, p: TenantUserId) -> dict:
    """Get one member of a tenant: the user id and role."""
    async with ctx.connection() as conn:
        row = await MembershipRepository(conn).get(p.tenant_id, p.user_id)
    return {"tenant_user": ctx.shaper.one(row)}


@rpc_method(ListTenantUsers, tenant_role("viewer"), result=results.TenantUserList,
             run_db=None, tenant_must_exist=True)
async def list_tenant_users(ctx: Call, p: ListTenantUsers) -> dict:
    """List a tenant's members."""
    async with ctx.connection() as conn:
        await require_tenant(ctx, conn, p.tenant_id)
        page = await MembershipRepository(conn).list(p.tenant_id, p.pagination)
    return ctx.shaper.page("tenant_users", page)
