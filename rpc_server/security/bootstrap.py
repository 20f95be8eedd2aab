"""The first platform admin: created with a key at the first start, and recoverable from
the server host with `flexdb create-key --admin`."""
from __future__ import annotations

import secrets
from uuid import UUID

from rpc_server.config import Settings
from rpc_server.security.auth import PREFIX_SHOWN, hash_key, new_api_key
from rpc_server.storage.db import Connection, connect, transaction_lock
from rpc_server.storage.migrations import MIGRATION_LOCK_KEY, migrate
from rpc_server.storage.repositories.api_keys import ApiKeyRepository
from rpc_server.storage.repositories.credentials import create_internal_admin, first_platform_admin
from rpc_server.storage.vectors import ensure_vector_storage

BOOTSTRAP_LOCK_KEY = MIGRATION_LOCK_KEY + 1


async def _create_admin(conn: Connection) -> UUID:
    # A unique address in a reserved domain: it cannot collide with a real user.
    return await create_internal_admin(
        conn, f"platform-admin-{secrets.token_hex(4)}@flexdb.invalid")


async def _issue_key(conn: Connection, secret: bytes, user_id: UUID, name: str) -> str:
    key = new_api_key()
    await ApiKeyRepository(conn).create(user_id, name, key[:PREFIX_SHOWN], hash_key(secret, key),
                                        None)
    return key


async def ensure_platform_admin(conn: Connection, secret: bytes) -> str | None:
    """At start: when no platform admin exists, create one and return its new key."""
    async with conn.transaction():
        await transaction_lock(conn, BOOTSTRAP_LOCK_KEY)
        if await first_platform_admin(conn) is not None:
            return None
        return await _issue_key(conn, secret, await _create_admin(conn), "bootstrap")


async def new_admin_key(conn: Connection, secret: bytes, name: str) -> str:
    """A new key for the first platform admin (created if there is none)."""
    async with conn.transaction():
        await transaction_lock(conn, BOOTSTRAP_LOCK_KEY)
        user_id = await first_platform_admin(conn) or await _create_admin(conn)
        return await _issue_key(conn, secret, user_id, name)


async def prepare_database(url: str, settings: Settings, secret: bytes) -> str | None:
    """Before serving, once per start (not once per worker): apply pending migrations and
    make sure a platform admin exists. Returns the new admin's key at the first start."""
    conn = await connect(url, settings)
    try:
        await migrate(conn, settings.migrations_dir)  # logs each file it applies
        await ensure_vector_storage(conn)  # when pgvector is available (logs which)
        return await ensure_platform_admin(conn, secret)
    finally:
        await conn.close()
