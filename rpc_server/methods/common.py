"""Small helpers shared by the method groups."""
from __future__ import annotations

from uuid import UUID

import asyncpg

from ..errors import InvalidParams, NotFound
from ..params import Params
from ..repositories import TenantRepository

DELETED = {"success": True}


def changes_of(params: Params, fields: tuple[str, ...]) -> dict:
    """The update fields the caller sent with a value (absent or null = unchanged)."""
    return {f: getattr(params, f) for f in fields
            if f in params.model_fields_set and getattr(params, f) is not None}


def require_changes(changes: dict, fields: tuple[str, ...]) -> None:
    if not changes:
        raise InvalidParams.field("params", "nothing to update: give at least one of "
                                  + ", ".join(fields))


async def require_tenant(ctx, conn: asyncpg.Connection, tenant_id: UUID) -> None:
    """Not found unless the tenant exists. A member's role already proves it (authorize
    checked it); only platform admins, who skip the membership check, need the query."""
    if not (await ctx.principal()).is_platform_admin:
        return
    if not await TenantRepository(conn).exists(tenant_id):
        raise NotFound("tenant", tenant_id)
