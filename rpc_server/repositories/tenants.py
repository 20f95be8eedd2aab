from __future__ import annotations

from uuid import UUID

import asyncpg

from ..pagination import Page, fetch_page
from ..params import Pagination
from .base import Repository


class TenantRepository(Repository):
    table = "tenants"
    kind = "tenant"
    key_columns = ("id",)
    columns = "id, slug, name, status, created_at, updated_at, version"

    async def create(self, slug: str, name: str) -> asyncpg.Record:
        return await self.conn.fetchrow(
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

    async def list(self, pagination: Pagination, member_of: UUID | None = None) -> Page:
        """All tenants, or those `member_of` (a user id) belongs to."""
        where, args = [], []
        if member_of is not None:
            where, args = ["id IN (SELECT tenant_id FROM tenant_users WHERE user_id = $1)"], [member_of]
        return await fetch_page(self.conn, scope="tenants", select=self.columns, table="tenants",
                                where=where, args=args, pagination=pagination)
