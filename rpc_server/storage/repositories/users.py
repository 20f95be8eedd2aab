from __future__ import annotations

from uuid import UUID

import asyncpg

from rpc_server.storage.pagination import Page, PageRequest, fetch_page
from rpc_server.storage.repositories.base import Repository

MEMBER_COLUMNS = "tenant_id, user_id, role, status, created_at, updated_at"


class UserRepository(Repository):
    table = "users"
    kind = "user"
    key_columns = ("id",)
    columns = "id, email, display_name, is_internal AS internal, created_at, updated_at, version"

    async def create(self, email: str, display_name: str) -> asyncpg.Record:
        return await self._fetch_one(
            f"INSERT INTO users (email, display_name) VALUES ($1, $2) RETURNING {self.columns}",
            email, display_name)

    async def get(self, user_id: UUID) -> asyncpg.Record:
        return await self._require(user_id)

    async def update(self, user_id: UUID, changes: dict,
                     expected_version: int | None) -> asyncpg.Record:
        return await self._update((user_id,), changes, expected_version)

    async def delete(self, user_id: UUID) -> None:
        await self._delete(user_id)

    async def list(self, pagination: PageRequest) -> Page:
        return await fetch_page(self.conn, scope="users", select=self.columns, table="users",
                                where=[], args=[], pagination=pagination)


class MembershipRepository(Repository):
    table = "tenant_users"
    kind = "tenant_user"
    key_columns = ("tenant_id", "user_id")
    columns = MEMBER_COLUMNS

    async def add(self, tenant_id: UUID, user_id: UUID, role: str) -> asyncpg.Record:
        return await self._fetch_one(
            f"INSERT INTO tenant_users (tenant_id, user_id, role) VALUES ($1, $2, $3) "
            f"RETURNING {self.columns}", tenant_id, user_id, role)

    async def add_if_absent(self, tenant_id: UUID, user_id: UUID, role: str
                            ) -> asyncpg.Record | None:
        """The new membership, or None when the user is a member already."""
        return await self.conn.fetchrow(
            f"INSERT INTO tenant_users (tenant_id, user_id, role) VALUES ($1, $2, $3) "
            f"ON CONFLICT (tenant_id, user_id) DO NOTHING RETURNING {self.columns}",
            tenant_id, user_id, role)

    async def get(self, tenant_id: UUID, user_id: UUID) -> asyncpg.Record:
        return await self._require(tenant_id, user_id)

    async def remove(self, tenant_id: UUID, user_id: UUID) -> None:
        await self._delete(tenant_id, user_id)

    async def role_for_update(self, tenant_id: UUID, user_id: UUID) -> str | None:
        return await self.conn.fetchval(
            "SELECT role FROM tenant_users WHERE tenant_id = $1 AND user_id = $2 FOR UPDATE",
            tenant_id, user_id)

    async def lock_owners(self, tenant_id: UUID) -> int:
        """Lock the tenant's owner rows (so concurrent demotions serialise) and count them."""
        rows = await self.conn.fetch(
            "SELECT user_id FROM tenant_users WHERE tenant_id = $1 AND role = 'owner' FOR UPDATE",
            tenant_id)
        return len(rows)

    async def set_role(self, tenant_id: UUID, user_id: UUID, role: str) -> asyncpg.Record:
        return await self._fetch_one(
            f"UPDATE tenant_users SET role = $3, updated_at = now() "
            f"WHERE tenant_id = $1 AND user_id = $2 RETURNING {self.columns}",
            tenant_id, user_id, role)

    async def list(self, tenant_id: UUID, pagination: PageRequest) -> Page:
        return await fetch_page(self.conn, scope="tenant_users", select=self.columns,
                                table="tenant_users", where=["tenant_id = $1"],
                                args=[tenant_id], pagination=pagination, key_column="user_id")
