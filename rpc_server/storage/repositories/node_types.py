from __future__ import annotations

from uuid import UUID

import asyncpg

from rpc_server.errors import NotFound
from rpc_server.storage.pagination import (
    Page,
    PageRequest,
    cut_to_budget,
    decode_token_text,
    encode_token,
    fetch_page,
    invalid_token,
    within_bytes,
)
from rpc_server.storage.repositories.base import Repository

VERSION_COLUMNS = ("tenant_id, node_type_id, version, schema, created_at, created_by_user_id, "
                   "mode, nodes_checked, nodes_invalid")


class NodeTypeRepository(Repository):
    table = "node_types"
    kind = "node_type"
    key_columns = ("tenant_id", "id")
    columns = ("id, tenant_id, name, description, schema, created_at, updated_at, version,"
               " schema_version, COALESCE(search_config, "
               "'{\"language\": \"simple\", \"fields\": null}'::jsonb) AS search, embedding")
    size_sql = "coalesce(octet_length(schema::text), 0) + octet_length(description)"

    async def create(self, tenant_id: UUID, name: str, description: str,
                     schema: dict | bool | None, user_id: UUID | None,
                     search_config: dict | None = None,
                     embedding: dict | None = None) -> asyncpg.Record:
        """Call in a transaction: the node type and its schema's version 1."""
        row = await self._fetch_one(
            "INSERT INTO node_types (tenant_id, name, description, schema, search_config, "
            f"embedding) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {self.columns}",
            tenant_id, name, description, schema, search_config, embedding)
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

    async def lock(self, tenant_id: UUID, node_type_id: UUID) -> asyncpg.Record:
        """In a transaction: the node type, locked FOR UPDATE (node inserts and bulk creates
        of the type wait for the commit: see update)."""
        row = await self.conn.fetchrow(
            f"SELECT {self.columns} FROM node_types WHERE tenant_id = $1 AND id = $2 "
            "FOR UPDATE", tenant_id, node_type_id)
        if row is None:
            raise NotFound(self.kind, node_type_id)
        return row

    async def change_schema(self, node_type: asyncpg.Record, changes: dict, schema,
                            user_id: UUID | None, mode: str, checked: int, invalid: int,
                            versions_kept: int) -> asyncpg.Record:
        """In a transaction, with the node type locked (lock): its new schema version,
        recorded with what the check of its nodes found, with the other `changes`; the
        oldest versions past `versions_kept` are dropped."""
        row = await self._update((node_type["tenant_id"], node_type["id"]),
                                 {**changes, "schema": schema,
                                  "schema_version": node_type["schema_version"] + 1}, None)
        await self.conn.execute(
            "INSERT INTO node_type_versions (tenant_id, node_type_id, version, schema, "
            "created_at, created_by_user_id, mode, nodes_checked, nodes_invalid) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            row["tenant_id"], row["id"], row["schema_version"], schema, row["updated_at"],
            user_id, mode, checked, invalid)
        await self.conn.execute(
            "DELETE FROM node_type_versions WHERE tenant_id = $1 AND node_type_id = $2 "
            "AND version <= $3", row["tenant_id"], row["id"],
            row["schema_version"] - versions_kept)
        return row

    async def version(self, tenant_id: UUID, node_type_id: UUID,
                      version: int) -> asyncpg.Record | None:
        return await self.conn.fetchrow(
            f"SELECT {VERSION_COLUMNS} FROM node_type_versions "
            "WHERE tenant_id = $1 AND node_type_id = $2 AND version = $3",
            tenant_id, node_type_id, version)

    async def versions(self, tenant_id: UUID, node_type_id: UUID, pagination: PageRequest,
                       max_bytes: int) -> Page:
        """A page of the node type's schema versions, oldest first (keyset on the version
        number: the page token holds the last one's)."""
        args: list = [tenant_id, node_type_id]
        after = ""
        if pagination.page_token:
            text, key = decode_token_text(pagination.page_token, "node_type_versions")
            if key != node_type_id or not text.isdigit() or len(text) > 10:
                raise invalid_token()
            args.append(int(text))
            after = " AND version > $3"
        args += [pagination.page_size + 1, max_bytes]
        page_sql = (f"SELECT {VERSION_COLUMNS} FROM node_type_versions WHERE tenant_id = $1 "
                    f"AND node_type_id = $2{after} ORDER BY version LIMIT ${len(args) - 1}")
        rows, cut, used = cut_to_budget(await self.conn.fetch(
            within_bytes(page_sql, "coalesce(octet_length(schema::text), 0)",
                         f"${len(args)}"), *args), max_bytes)
        next_token = ""
        if len(rows) > pagination.page_size or cut:
            rows = rows[:pagination.page_size]
            next_token = encode_token("node_type_versions", str(rows[-1]["version"]),
                                      node_type_id)
        total = None
        if pagination.include_total:
            total = await self.conn.fetchval(
                "SELECT count(*) FROM node_type_versions WHERE tenant_id = $1 "
                "AND node_type_id = $2", tenant_id, node_type_id)
        return Page(rows, next_token, total, used)

    async def search_settings(self, tenant_id: UUID,
                              node_type_id: UUID | None) -> list[asyncpg.Record]:
        """(id, search_config) of the tenant's node types, or of one."""
        if node_type_id is None:
            return await self.conn.fetch("SELECT id, search_config FROM node_types "
                                         "WHERE tenant_id = $1", tenant_id)
        return await self.conn.fetch("SELECT id, search_config FROM node_types "
                                     "WHERE tenant_id = $1 AND id = $2", tenant_id, node_type_id)

    async def language_exists(self, language: str) -> bool:
        """Whether `language` names one of the database's built-in text search
        configurations."""
        return await self.conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgname = $1 "
            "AND cfgnamespace = 'pg_catalog'::regnamespace)", language)

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
