"""What authentication reads when its caches miss: the caller behind a key, a member's
role, and whether a pipeline run's token still stands. Each takes a pool (one statement,
no transaction) so a lookup holds no connection longer than its statement."""
from __future__ import annotations

from uuid import UUID

import asyncpg

from rpc_server.storage.db import Connection


async def key_holder(pool: asyncpg.Pool, digest: bytes) -> asyncpg.Record | None:
    """The unrevoked key with this hash and its user (id, user_id, key_hash, expires_at,
    is_platform_admin)."""
    return await pool.fetchrow(
        "SELECT k.id, k.user_id, k.key_hash, k.expires_at, u.is_platform_admin "
        "FROM api_keys k JOIN users u ON u.id = k.user_id "
        "WHERE k.key_hash = $1 AND k.revoked_at IS NULL", digest)


async def active_role(pool: asyncpg.Pool, tenant_id: UUID, user_id: UUID) -> str | None:
    return await pool.fetchval(
        "SELECT role FROM tenant_users WHERE tenant_id = $1 AND user_id = $2 "
        "AND status = 'active'", tenant_id, user_id)


async def run_standing(pool: asyncpg.Pool, tenant_id: UUID, run_id: UUID,
                       key_id: UUID | None, user_id: UUID | None) -> asyncpg.Record | None:
    """A run's status, whether its caller's key still holds (key_ok), whether the caller is
    a platform admin, and the caller's current role in the tenant; None: no such run."""
    return await pool.fetchrow(
        "SELECT r.status, "
        "  (SELECT k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now()) "
        "   FROM api_keys k WHERE k.id = $3) AS key_ok, "
        "  (SELECT u.is_platform_admin FROM users u WHERE u.id = $4) AS is_admin, "
        "  (SELECT m.role FROM tenant_users m WHERE m.tenant_id = $1 AND m.user_id = $4 "
        "   AND m.status = 'active') AS role "
        "FROM pipeline_runs r WHERE r.tenant_id = $1 AND r.id = $2",
        tenant_id, run_id, key_id, user_id)


async def first_platform_admin(conn: Connection) -> UUID | None:
    return await conn.fetchval(
        "SELECT id FROM users WHERE is_platform_admin ORDER BY created_at, id LIMIT 1")


async def create_internal_admin(conn: Connection, email: str) -> UUID:
    """A platform admin made by flexdb itself (marked internal in user results)."""
    return await conn.fetchval(
        "INSERT INTO users (email, display_name, is_platform_admin, is_internal) "
        "VALUES ($1, 'Platform admin', true, true) RETURNING id", email)
