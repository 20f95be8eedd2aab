from __future__ import annotations

from uuid import UUID

import asyncpg

from rpc_server.storage.pagination import Page, PageRequest, fetch_page
from rpc_server.storage.repositories.base import Repository
from rpc_server.storage.repositories.changes import ChangeRepository

OWNER_LOCK_KEY = 0x6F776E73  # "owns": advisory locks serialising one user's tenant creation


class TenantRepository(Repository):
    table = "tenants"
    kind = "tenant"
    key_columns = ("id",)
    columns = "id, slug, name, status, created_at, updated_at, version"

    async def create(self, slug: str, name: str) -> asyncpg.Record:
        return await self._fetch_one(
            f"INSERT INTO tenants (slug, name) VALUES ($1, $2) RETURNING {self.columns}",
            slug, name)

    async def get(self, tenant_id: UUID) -> asyncpg.Record:
        return await self._require(tenant_id)

    async def exists(self, tenant_id: UUID) -> bool:
        return bool(await self.conn.fetchval("SELECT 1 FROM tenants WHERE id = $1", tenant_id))

    async def update(self, tenant_id: UUID, changes: dict,
                     expected_version: int | None) -> asyncpg.Record:
        return await self._update((tenant_id,), changes, expected_version)

    async def delete(self, tenant_id: UUID) -> None:
        await self._delete(tenant_id)
        # Its nodes went with it, so its counts add up to zero: drop them.
        await self.conn.execute("DELETE FROM node_counts WHERE tenant_id = $1", tenant_id)
        await self.conn.execute("DELETE FROM tenant_usage WHERE tenant_id = $1", tenant_id)
        await ChangeRepository(self.conn).forget_tenant(tenant_id)

    async def usage(self, tenant_id: UUID) -> asyncpg.Record:
        """What the tenant stores: nodes, and bytes of node and relationship documents."""
        return await self._fetch_one(
            "SELECT (SELECT coalesce(sum(n), 0) FROM node_counts WHERE tenant_id = $1)::bigint "
            "AS nodes, (SELECT coalesce(sum(bytes), 0) FROM tenant_usage WHERE tenant_id = $1)"
            "::bigint AS bytes", tenant_id)

    async def lock_owned_by(self, user_id: UUID) -> int:
        """In a transaction: serialise tenant creation by the user (its quota holds under
        concurrent calls) and count the tenants it owns."""
        await self.conn.execute("SELECT pg_advisory_xact_lock($1::bigint)",
                                OWNER_LOCK_KEY ^ (user_id.int & 0x7FFFFFFFFFFFFFFF))
        return await self.conn.fetchval(
            "SELECT count(*) FROM tenant_users WHERE user_id = $1 AND role = 'owner'", user_id)

    async def list(self, pagination: PageRequest, member_of: UUID | None = None) -> Page:
        """All tenants, or those `member_of` (a user id) belongs to."""
        where, args = [], []
        if member_of is not None:
            where = ["id IN (SELECT tenant_id FROM tenant_users WHERE user_id = $1)"]
            args = [member_of]
        return await fetch_page(self.conn, scope="tenants", select=self.columns, table="tenants",
                                where=where, args=args, pagination=pagination)
