"""API keys: create_api_key (the secret is returned once), list_api_keys, revoke_api_key.
Users manage their own keys; platform admins manage anyone's."""
from __future__ import annotations

from datetime import datetime, timezone

from rpc_server.api import results
from rpc_server.api.context import Call
from rpc_server.api.params import Id, Moment, Name, PaginationParam, Params
from rpc_server.api.registry import rpc_method
from rpc_server.errors import Forbidden, InvalidParams, NotFound
from rpc_server.security.auth import AUTHENTICATED, PREFIX_SHOWN, hash_key, new_api_key
from rpc_server.storage.repositories.api_keys import ApiKeyRepository


class CreateApiKey(Params):
    name: Name
    user_id: Id | None = None
    expires_at: Moment | None = None


class ApiKeyId(Params):
    id: Id


class ListApiKeys(Params):
    user_id: Id | None = None
    pagination: PaginationParam


async def _owner_of_request(ctx: Call, user_id):
    """The user whose keys a call is about: yourself, or (platform admins) anyone."""
    principal = await ctx.principal()
    if user_id is None or user_id == principal.user_id:
        if principal.user_id is None:
            raise InvalidParams.field("user_id", "is required for anonymous callers")
        return principal.user_id
    if not principal.is_platform_admin:
        raise Forbidden("only a platform admin manages other users' keys",
                        required_role="platform_admin")
    return user_id


def _refuse_outliving_the_caller(principal, expires_at: datetime | None) -> None:
    """A key that expires cannot make a key that lives on after it (or never expires):
    otherwise an expiry would be escaped by making a fresh key before it."""
    limit = principal.expires_at
    if limit is not None and (expires_at is None or expires_at > limit):
        raise InvalidParams(errors=[{
            "field": "expires_at",
            "message": f"must be given and no later than {limit.isoformat()}, when the "
                       "calling key expires"}], max_expires_at=limit.isoformat())


@rpc_method(CreateApiKey, AUTHENTICATED, result=results.ApiKeyCreated,
             run_db=None, tenant_must_exist=False)
async def create_api_key(ctx: Call, p: CreateApiKey) -> dict:
    """Create an API key; the `secret` in the result is shown only this once."""
    user_id = await _owner_of_request(ctx, p.user_id)
    if p.expires_at is not None and p.expires_at <= datetime.now(timezone.utc):
        raise InvalidParams.field("expires_at", "must be in the future")
    _refuse_outliving_the_caller(await ctx.principal(), p.expires_at)
    secret = new_api_key()
    async with ctx.transaction() as conn:
        row = await ApiKeyRepository(conn).create(
            user_id, p.name, secret[:PREFIX_SHOWN], hash_key(ctx.state.auth.secret, secret),
            p.expires_at)
        ctx.set_target("api_key", row["id"])
    return {"api_key": ctx.shaper.one(row), "secret": secret}


@rpc_method(ListApiKeys, AUTHENTICATED, result=results.ApiKeyList,
             run_db=None, tenant_must_exist=False)
async def list_api_keys(ctx: Call, p: ListApiKeys) -> dict:
    """List API keys (never their secrets): your own, or a platform admin's choice."""
    principal = await ctx.principal()
    user_id = p.user_id if principal.is_platform_admin else await _owner_of_request(ctx, p.user_id)
    async with ctx.connection() as conn:
        page = await ApiKeyRepository(conn).list(user_id, p.pagination)
    return ctx.shaper.page("api_keys", page)


@rpc_method(ApiKeyId, AUTHENTICATED, result=results.ApiKeyResult,
             run_db=None, tenant_must_exist=False)
async def revoke_api_key(ctx: Call, p: ApiKeyId) -> dict:
    """Revoke an API key; it stops working at once on this instance and within the auth
    cache time (FLEXDB_AUTH_CACHE_TTL_S) on others."""
    principal = await ctx.principal()
    async with ctx.transaction() as conn:
        keys = ApiKeyRepository(conn)
        key = await keys.get(p.id)
        if key["user_id"] != principal.user_id and not principal.is_platform_admin:
            raise NotFound("api_key", p.id)
        row = await keys.revoke(p.id)
    ctx.state.auth.forget_key(p.id)
    return {"api_key": ctx.shaper.one(row)}
