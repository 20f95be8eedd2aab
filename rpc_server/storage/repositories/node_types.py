from __future__ import annotations

from uuid import UUID

import asyncpg

from rpc_server.storage.pagination import Page, PageRequest, fetch_page
from rpc_server.storage.repositories.base import Repository


class NodeTypeRepository(Repository):
    table = "node_types"
    kind = "node_type"
    key_columns = ("tenant_id", "id")
    columns = ("id, tenant_id, name, description, schema, created_at, updated_at, version,"
               " schema_version")
    size_sql = "coalesce(octet_length(schema::text), 0) + octet_length(description)"

    async def create(self, tenant_id: UUID, name: str, description: str,
                     schema: dict | bool | None, user_id: UUID | None) -> asyncpg.Record:
        """Call in a transaction: the node type and its schema's version 1."""
        row = await self._fetch_one(
            "INSERT INTO node_types (tenant_id, name, description, schema) "
            f"VALUES ($1, $2, $3, $4) RETURNING {self.columns}",
            tenant_id, name, description, schema)
        await self.conn.execute(
            "INSERT INTO node_type_versions (tenant_id, node_type_id, version, schema, "
            "created_at, created_by_user_id, mode) VALUES ($1, $2, 1, $3, $4, $5, 'create')",
            tenant_id, row["id"], schema, row["created_at"], user_id)
        return row

    async def get(self, tenant_id: UUID, node_type_id: UUID) -> asyncpg.Record:
        return await self._require(tenant_id, node_type_id)

    async def get_many(self, tenant_id: UUID, ids: list[UUID]) -> dict[UUID, asyncpg.Record]:
        rows = await self.conn.fetch(
            f"SELECT {self.columns} FROM node_types WHERE tenant_id = $1 AND id = ANY($2::uuid[])",
            tenant_id, ids)
        return {r["id"]: r for r in rows}

    async def lock_versions(self, tenant_id: UUID, ids: list[UUID]) -> dict[UUID, int]:
        """The node types' current versions, share-locked until the transaction ends: an
        update_node_type of one of them waits for its commit."""
        rows = await self.conn.fetch(
            "SELECT id, version FROM node_types WHERE tenant_id = $1 AND id = ANY($2::uuid[]) "
            "ORDER BY id FOR SHARE", tenant_id, ids)
        return {r["id"]: r["version"] for r in rows}

    async def share_lock(self, tenant_id: UUID, node_type_id: UUID) -> asyncpg.Record | None:
        """In a transaction: the node type, share-locked until it ends (a schema change
        waits for it: see update); None when it is gone."""
        return await self.conn.fetchrow(
            f"SELECT {self.columns} FROM node_types WHERE tenant_id = $1 AND id = $2 FOR SHARE",
            tenant_id, node_type_id)

    async def schema_versions(self, tenant_id: UUID, ids: list[UUID]) -> dict[UUID, int]:
        """The current schema version of each of these node types that exists."""
        rows = await self.conn.fetch(
            "SELECT id, schema_version FROM node_types WHERE tenant_id = $1 "
            "AND id = ANY($2::uuid[])", tenant_id, ids)
        return {r["id"]: r["schema_version"] for r in rows}

    async def update(self, tenant_id: UUID, node_type_id: UUID, changes: dict,
                     expected_version: int | None) -> asyncpg.Record:
        """Call in a transaction. The row is locked FOR UPDATE first, which waits for
        node inserts in flight (they hold it key-share-locked: NodeRepository.INSERT_CHECKED)
        and bulk creates (lock_versions), so none commits against the version replaced."""
        await self.conn.execute(
            "SELECT 1 FROM node_types WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            tenant_id, node_type_id)
        return await self._update((tenant_id, node_type_id), changes, expected_version)

    async def delete(self, tenant_id: UUID, node_type_id: UUID) -> None:
        await self._delete(tenant_id, node_type_id)
        # Its nodes went with it, so its counts add up to zero: drop them.
        await self.conn.execute("DELETE FROM node_counts WHERE tenant_id = $1 AND "
                                "node_type_id = $2", tenant_id, node_type_id)

    async def list(self, tenant_id: UUID, pagination: PageRequest,
                   max_bytes: int | None = None) -> Page:
        return await fetch_page(self.conn, scope="node_types", select=self.columns,
                                table="node_types", where=["tenant_id = $1"], args=[tenant_id],
                                pagination=pagination, size_sql=self.size_sql,
                                max_bytes=max_bytes)
