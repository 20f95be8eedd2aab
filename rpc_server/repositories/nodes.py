from __future__ import annotations

from uuid import UUID

import asyncpg

from ..pagination import Page, fetch_page
from ..params import Pagination
from .base import Repository


class NodeRepository(Repository):
    table = "nodes"
    kind = "node"
    key_columns = ("tenant_id", "id")
    columns = "id, tenant_id, node_type_id, data, created_at, updated_at, version"

    async def create(self, tenant_id: UUID, node_type_id: UUID, data: dict) -> asyncpg.Record:
        return await self.conn.fetchrow(
            "INSERT INTO nodes (tenant_id, node_type_id, data) VALUES ($1, $2, $3) "
            f"RETURNING {self.columns}", tenant_id, node_type_id, data)

    async def create_many(self, tenant_id: UUID, ids: list[UUID], node_type_ids: list[UUID],
                          datas: list[dict]) -> list[asyncpg.Record]:
        """One set-based INSERT; rows come back in input order."""
        rows = await self.conn.fetch(
            "INSERT INTO nodes (tenant_id, id, node_type_id, data) "
            "SELECT $1, i.id, i.node_type_id, i.data "
            "FROM unnest($2::uuid[], $3::uuid[], $4::jsonb[]) AS i (id, node_type_id, data) "
            f"RETURNING {self.columns}", tenant_id, ids, node_type_ids, datas)
        by_id = {r["id"]: r for r in rows}
        return [by_id[i] for i in ids]

    async def get(self, tenant_id: UUID, node_id: UUID) -> asyncpg.Record:
        return await self._require(tenant_id, node_id)

    async def node_type_of(self, tenant_id: UUID, node_id: UUID) -> UUID | None:
        return await self.conn.fetchval(
            "SELECT node_type_id FROM nodes WHERE tenant_id = $1 AND id = $2", tenant_id, node_id)

    async def existing_ids(self, tenant_id: UUID, ids: list[UUID]) -> set[UUID]:
        rows = await self.conn.fetch(
            "SELECT id FROM nodes WHERE tenant_id = $1 AND id = ANY($2::uuid[])", tenant_id, ids)
        return {r["id"] for r in rows}

    async def update(self, tenant_id: UUID, node_id: UUID, changes: dict,
                     expected_version: int | None) -> asyncpg.Record:
        return await self._update((tenant_id, node_id), changes, expected_version)

    async def delete(self, tenant_id: UUID, node_id: UUID) -> None:
        await self._delete(tenant_id, node_id)

    async def list(self, tenant_id: UUID, node_type_id: UUID | None,
                   pagination: Pagination) -> Page:
        where, args = ["tenant_id = $1"], [tenant_id]
        if node_type_id is not None:
            where.append("node_type_id = $2")
            args.append(node_type_id)
        return await fetch_page(self.conn, scope="nodes", select=self.columns, table="nodes",
                                where=where, args=args, pagination=pagination)
